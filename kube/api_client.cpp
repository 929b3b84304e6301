#include "kube/api_client.h"

#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>

namespace nodemeter::kube {

namespace {

namespace fs = std::filesystem;

using ConfigResult = boost::system::result<KubeConfig, std::string>;

// KubeConfig is constructible from a string (its first member), so errors are made explicitly.
ConfigResult config_error(std::string message) {
  return ConfigResult(boost::system::in_place_error, std::move(message));
}

struct FileText {
  std::string text;
  std::string error;  // non-empty: why the file could not be read
};

FileText read_whole(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {"", std::strerror(errno)};
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return {"", std::strerror(errno)};
  return {text.str(), ""};
}

std::string trim(std::string s) {
  const char* space = " \t\r\n";
  s.erase(s.find_last_not_of(space) + 1);
  s.erase(0, std::min(s.size(), s.find_first_not_of(space)));
  return s;
}

// RFC 4648 base64 as kubeconfig *-data fields carry it; whitespace is skipped.
std::optional<std::string> decode_base64(std::string_view text) {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  size_t padding = 0;
  for (char c : text) {
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    if (padding != 0) return std::nullopt;  // data after padding
    const size_t value = kAlphabet.find(c);
    if (value == std::string_view::npos) return std::nullopt;
    bits = (bits << 6) | static_cast<uint32_t>(value);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<char>((bits >> count) & 0xff));
    }
  }
  if (padding > 2 || count >= 6) return std::nullopt;
  return out;
}

std::string scalar(const YAML::Node& node, const char* key) {
  const YAML::Node value = node[key];
  return value && value.IsScalar() ? value.Scalar() : std::string();
}

bool truthy(const std::string& value) {
  return value == "true" || value == "True" || value == "TRUE" || value == "yes" || value == "on" ||
         value == "y";
}

// The `field` map of the entry named `name` in the list `list` ("clusters" → "cluster").
YAML::Node named(const YAML::Node& root, const char* list, const char* field,
                 const std::string& name) {
  const YAML::Node entries = root[list];
  if (!entries || !entries.IsSequence()) return YAML::Node(YAML::NodeType::Undefined);
  for (const auto& entry : entries) {
    if (entry.IsMap() && scalar(entry, "name") == name) {
      const YAML::Node value = entry[field];
      if (value && value.IsMap()) return value;
      return YAML::Node(YAML::NodeType::Map);
    }
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

ConfigResult parse_kubeconfig(const fs::path& file, std::string_view wanted_context) {
  const std::string where = "kubeconfig " + file.string();
  YAML::Node root;
  try {
    root = YAML::LoadFile(file.string());
  } catch (const YAML::BadFile&) {
    return config_error(where + " cannot be read: " + std::strerror(errno));
  } catch (const YAML::Exception& e) {
    return config_error(where + " is not valid YAML: " + e.what());
  }
  if (!root.IsMap()) return config_error(where + " is not a kubeconfig (not a YAML mapping)");

  std::string context_name(wanted_context);
  if (context_name.empty()) context_name = scalar(root, "current-context");
  if (context_name.empty()) return config_error(where + " has no current-context");
  const YAML::Node context = named(root, "contexts", "context", context_name);
  if (!context) return config_error(where + " has no context \"" + context_name + "\"");
  const std::string cluster_name = scalar(context, "cluster");
  const YAML::Node cluster = named(root, "clusters", "cluster", cluster_name);
  if (!cluster) {
    return config_error(where + " has no cluster \"" + cluster_name + "\" (context \"" +
                        context_name + "\")");
  }

  const fs::path dir = file.parent_path();
  auto resolve = [&](const std::string& path) {
    if (path.empty() || fs::path(path).is_absolute()) return path;
    return (dir / path).string();
  };
  auto decoded = [&](const YAML::Node& node, const char* key,
                     std::string& out) -> std::optional<std::string> {
    const std::string value = scalar(node, key);
    if (value.empty()) return std::nullopt;
    auto bytes = decode_base64(value);
    if (!bytes) return where + ": " + key + " is not valid base64";
    out = std::move(*bytes);
    return std::nullopt;
  };

  KubeConfig config;
  config.description = where + " (context " + context_name + ")";
  config.server = scalar(cluster, "server");
  if (config.server.empty())
    return config_error(where + ": cluster \"" + cluster_name + "\" has no server");
  config.tls.ca_file = resolve(scalar(cluster, "certificate-authority"));
  if (auto error = decoded(cluster, "certificate-authority-data", config.tls.ca_pem)) {
    return config_error(*error);
  }
  config.tls.insecure_skip_verify = truthy(scalar(cluster, "insecure-skip-tls-verify"));
  config.tls.server_name = scalar(cluster, "tls-server-name");

  const std::string user_name = scalar(context, "user");
  if (!user_name.empty()) {
    const YAML::Node user = named(root, "users", "user", user_name);
    if (!user) {
      return config_error(where + " has no user \"" + user_name + "\" (context \"" + context_name +
                          "\")");
    }
    if (user["exec"] || user["auth-provider"]) {
      return config_error(
          where + ": user \"" + user_name +
          "\" authenticates with an exec or auth-provider plugin, which nodemeter does not "
          "run; use a token, a tokenFile or a client certificate");
    }
    if (user["username"] || user["password"]) {
      return config_error(
          where + ": user \"" + user_name +
          "\" uses basic authentication, which Kubernetes removed; use a token or a client "
          "certificate");
    }
    config.token = scalar(user, "token");
    config.token_file = resolve(scalar(user, "tokenFile"));
    config.tls.client_cert_file = resolve(scalar(user, "client-certificate"));
    config.tls.client_key_file = resolve(scalar(user, "client-key"));
    if (auto error = decoded(user, "client-certificate-data", config.tls.client_cert_pem)) {
      return config_error(*error);
    }
    if (auto error = decoded(user, "client-key-data", config.tls.client_key_pem))
      return config_error(*error);
    // The inline data wins over a file, as in client-go.
    if (!config.tls.client_cert_pem.empty()) config.tls.client_cert_file.clear();
    if (!config.tls.client_key_pem.empty()) config.tls.client_key_file.clear();
  }
  if (!config.tls.ca_pem.empty()) config.tls.ca_file.clear();
  if (auto url = parse_base_url(config.server); !url)
    return config_error(where + ": " + url.error());
  return config;
}

struct FileIdentity {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = -1;
  timespec mtime{};
  bool operator==(const FileIdentity& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime.tv_sec == o.mtime.tv_sec &&
           mtime.tv_nsec == o.mtime.tv_nsec;
  }
};

std::optional<FileIdentity> identify(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileIdentity{st.st_dev, st.st_ino, st.st_size, st.st_mtim};
}

class ApiClientImpl final : public ApiClient {
 public:
  ApiClientImpl(KubeConfig config, std::shared_ptr<HttpClient> http)
      : config_(std::move(config)), http_(std::move(http)) {}

  // Reads the token file now; an error names it.
  std::optional<std::string> load_token() {
    std::lock_guard lock(mu_);
    if (config_.token_file.empty()) return std::nullopt;
    if (reload_locked()) return std::nullopt;
    if (!config_.token.empty()) return std::nullopt;  // a fixed token to fall back on
    auto text = read_whole(config_.token_file);
    return "cannot read the token file " + config_.token_file.string() + ": " +
           (text.error.empty() ? std::string("it is empty") : text.error);
  }

  void request(HttpRequest request, std::function<void(HttpResult)> done) override {
    authorize(request);
    http_->request(std::move(request), std::move(done));
  }
  std::shared_ptr<StreamHandle> stream(HttpRequest request, StreamCallbacks callbacks) override {
    authorize(request);
    return http_->stream(std::move(request), std::move(callbacks));
  }
  void shutdown() override { http_->shutdown(); }
  const KubeConfig& config() const override { return config_; }

 private:
  void authorize(HttpRequest& request) {
    bool accept = false;
    for (const auto& [name, value] : request.headers) {
      if (boost::beast::iequals(name, "accept")) accept = true;
    }
    if (!accept) request.headers.emplace_back("Accept", "application/json");
    const std::string token = bearer_token();
    if (!token.empty()) request.headers.emplace_back("Authorization", "Bearer " + token);
  }

  // The token file's content as of its last change; a file that vanished or became unreadable
  // leaves the last token in use (a projected token is swapped by a symlink rename).
  std::string bearer_token() override {
    std::lock_guard lock(mu_);
    if (!config_.token_file.empty()) reload_locked();
    return file_token_.empty() ? config_.token : file_token_;
  }

  // True when a token from the file is in use.
  bool reload_locked() {
    auto id = identify(config_.token_file);
    if (id && (!file_id_ || !(*id == *file_id_))) {
      auto text = read_whole(config_.token_file);
      if (text.error.empty()) {
        std::string token = trim(std::move(text.text));
        if (!token.empty()) {
          file_token_ = std::move(token);
          file_id_ = id;
        }
      }
    }
    return !file_token_.empty();
  }

  KubeConfig config_;
  std::shared_ptr<HttpClient> http_;
  std::mutex mu_;
  std::optional<FileIdentity> file_id_;
  std::string file_token_;
};

}  // namespace

boost::system::result<std::optional<KubeConfig>, std::string> load_config(
    const std::filesystem::path& kubeconfig, std::string* why_not) {
  using Result = boost::system::result<std::optional<KubeConfig>, std::string>;
  if (!kubeconfig.empty()) {
    auto loaded = load_kubeconfig(kubeconfig);
    if (!loaded) return Result(boost::system::in_place_error, loaded.error());
    return std::optional<KubeConfig>(std::move(*loaded));
  }
  auto in_cluster = load_in_cluster();
  if (!in_cluster) {
    if (why_not) *why_not = in_cluster.error();
    return std::optional<KubeConfig>();
  }
  return std::optional<KubeConfig>(std::move(*in_cluster));
}

boost::system::result<KubeConfig, std::string> load_in_cluster(const InClusterPaths& paths) {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  if (host == nullptr || *host == '\0') return config_error("KUBERNETES_SERVICE_HOST is not set");
  if (port == nullptr || *port == '\0') return config_error("KUBERNETES_SERVICE_PORT is not set");
  const std::string h(host);
  KubeConfig config;
  config.server = "https://" + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + port;
  if (auto url = parse_base_url(config.server); !url) return config_error(url.error());
  auto token = read_whole(paths.token);
  if (!token.error.empty()) {
    return config_error("the service account token " + paths.token.string() +
                        " cannot be read: " + token.error);
  }
  if (trim(token.text).empty())
    return config_error("the service account token " + paths.token.string() + " is empty");
  if (!fs::exists(paths.ca)) {
    return config_error("the service account CA bundle " + paths.ca.string() + " does not exist");
  }
  config.token_file = paths.token;
  config.tls.ca_file = paths.ca.string();
  config.description = "in-cluster (service account)";
  return config;
}

boost::system::result<KubeConfig, std::string> load_kubeconfig(const std::filesystem::path& file,
                                                               std::string_view context) {
  try {
    return parse_kubeconfig(file, context);
  } catch (const std::exception& e) {
    return config_error("kubeconfig " + file.string() + " cannot be used: " + e.what());
  }
}

boost::system::result<std::shared_ptr<ApiClient>, std::string> ApiClient::create(
    boost::asio::io_context& io, KubeConfig config) {
  auto http = HttpClient::create(io, config.server, config.tls);
  if (!http) return config.description + ": " + http.error();
  auto client = std::make_shared<ApiClientImpl>(std::move(config), std::move(*http));
  if (auto error = client->load_token()) return client->config().description + ": " + *error;
  return std::shared_ptr<ApiClient>(std::move(client));
}

}  // namespace nodemeter::kube
