// Helpers shared by the kube tests: an io_context on its own thread, blocking calls into the
// asynchronous clients, servers on the loopback, certificates made with the openssl CLI, and the
// Python fake API server as a child process.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/server.h"
#include "kube/http_client.h"

namespace nodemeter::kube::testing {

namespace net = boost::asio;
namespace fs = std::filesystem;

// An io_context run by one thread until destruction.
class IoThread {
 public:
  IoThread() : guard_(net::make_work_guard(io)), thread_([this] { io.run(); }) {}
  ~IoThread() { stop(); }
  void stop() {
    if (!thread_.joinable()) return;
    guard_.reset();
    io.stop();
    thread_.join();
  }
  net::io_context io;

 private:
  net::executor_work_guard<net::io_context::executor_type> guard_;
  std::thread thread_;
};

// Waits for one exchange of an asynchronous client.
template <class Client>
HttpResult call(Client& client, HttpRequest request) {
  auto promise = std::make_shared<std::promise<HttpResult>>();
  auto future = promise->get_future();
  client.request(std::move(request), [promise](HttpResult r) { promise->set_value(std::move(r)); });
  REQUIRE(future.wait_for(std::chrono::seconds(20)) == std::future_status::ready);
  return future.get();
}

inline HttpRequest get(std::string target,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
  HttpRequest request;
  request.target = std::move(target);
  request.timeout = timeout;
  return request;
}

// api::Server with a handler on its own io thread.
class TestServer {
 public:
  explicit TestServer(api::Handler handler, std::shared_ptr<net::ssl::context> tls = nullptr) {
    api::ServerOptions options;
    options.listen = {"127.0.0.1:0"};
    options.tls = std::move(tls);
    server_ = std::make_unique<api::Server>(thread_.io, options, std::move(handler));
    auto started = server_->start();
    REQUIRE(started.has_value());
    port = server_->local_endpoints().at(0).port();
  }
  ~TestServer() {
    thread_.stop();
    server_.reset();
  }
  std::string url(bool tls, const std::string& host = "127.0.0.1") const {
    return std::string(tls ? "https://" : "http://") + host + ":" + std::to_string(port);
  }
  unsigned short port = 0;

 private:
  IoThread thread_;
  std::unique_ptr<api::Server> server_;
};

inline fs::path temp_dir(const std::string& name) {
  fs::path dir =
      fs::temp_directory_path() / ("nodemeter-kube-" + name + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

inline void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  REQUIRE(out.good());
}

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline void run(const std::string& command) {
  INFO(command);
  REQUIRE(std::system((command + " >/dev/null 2>&1").c_str()) == 0);
}

// A CA and, signed by it, a server certificate for localhost and 127.0.0.1 and a client
// certificate for CN=`client`; files <dir>/<name>.{crt,key}.
struct Pki {
  fs::path dir;
  fs::path ca_crt() const { return dir / "ca.crt"; }
  fs::path ca_key() const { return dir / "ca.key"; }
  fs::path server_crt() const { return dir / "server.crt"; }
  fs::path server_key() const { return dir / "server.key"; }
  fs::path client_crt() const { return dir / "client.crt"; }
  fs::path client_key() const { return dir / "client.key"; }
};

inline void make_ca(const fs::path& dir, const std::string& name) {
  run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "
      "/CN=" +
      name + " -keyout " + (dir / (name + ".key")).string() + " -out " +
      (dir / (name + ".crt")).string());
}

inline void make_signed(const fs::path& dir, const std::string& ca, const std::string& name,
                        const std::string& extensions) {
  const std::string key = (dir / (name + ".key")).string();
  const std::string csr = (dir / (name + ".csr")).string();
  const std::string ext = (dir / (name + ".ext")).string();
  write_file(ext, extensions + "\n");
  run("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=" + name +
      " -keyout " + key + " -out " + csr);
  run("openssl x509 -req -in " + csr + " -CA " + (dir / (ca + ".crt")).string() + " -CAkey " +
      (dir / (ca + ".key")).string() + " -CAcreateserial -days 2 -extfile " + ext + " -out " +
      (dir / (name + ".crt")).string());
}

inline Pki make_pki(const std::string& name) {
  Pki pki{temp_dir(name)};
  make_ca(pki.dir, "ca");
  make_signed(pki.dir, "ca", "server",
              "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth");
  make_signed(pki.dir, "ca", "client", "extendedKeyUsage=clientAuth");
  return pki;
}

inline std::shared_ptr<net::ssl::context> server_context(const Pki& pki, bool require_client_cert) {
  auto context = std::make_shared<net::ssl::context>(net::ssl::context::tls_server);
  context->use_certificate_chain_file(pki.server_crt().string());
  context->use_private_key_file(pki.server_key().string(), net::ssl::context::pem);
  if (require_client_cert) {
    context->load_verify_file(pki.ca_crt().string());
    context->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert);
  }
  return context;
}

}  // namespace nodemeter::kube::testing

namespace nodemeter::kube::testing {

// tests/e2e/support/fake_apiserver.py as a child process on a loopback port, controlled through
// its /_fake/ API. Killed by PID when the test ends.
class FakeApiProcess {
 public:
  explicit FakeApiProcess(std::vector<std::string> args = {}) {
    const char* source = std::getenv("NODEMETER_SOURCE_DIR");
    const fs::path root = source != nullptr
                              ? fs::path(source)
                              : fs::path(__FILE__).parent_path().parent_path().parent_path();
    const fs::path script = root / "tests/e2e/support/fake_apiserver.py";
    REQUIRE(fs::exists(script));
    dir_ = temp_dir("fakeapi-" + std::to_string(counter()++));
    const fs::path port_file = dir_ / "port";
    std::vector<std::string> argv = {"python3", script.string(), "--port-file", port_file.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      std::vector<char*> raw;
      for (auto& a : argv)
        raw.push_back(a.data());
      raw.push_back(nullptr);
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) ::dup2(null, STDOUT_FILENO);
      ::execvp("python3", raw.data());
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (!fs::exists(port_file) && std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        FAIL("the fake API server exited at start");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    REQUIRE(fs::exists(port_file));
    port = static_cast<unsigned short>(std::stoi(read_text(port_file)));
    auto control = HttpClient::create(io_.io, "http://127.0.0.1:" + std::to_string(port), {});
    REQUIRE(control.has_value());
    control_ = *control;
  }
  ~FakeApiProcess() {
    kill();
    control_.reset();
    io_.stop();
    fs::remove_all(dir_);
  }
  FakeApiProcess(const FakeApiProcess&) = delete;
  FakeApiProcess& operator=(const FakeApiProcess&) = delete;

  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }

  // A /_fake/ call; returns the answer's body.
  std::string control(const std::string& path, const std::string& body = {}) {
    HttpRequest request;
    request.method = body.empty() ? boost::beast::http::verb::get : boost::beast::http::verb::post;
    request.target = path;
    request.body = body;
    auto result = call(*control_, request);
    INFO(path);
    REQUIRE(result.has_value());
    REQUIRE(result->status < 300);
    return result->body;
  }

  unsigned short port = 0;

 private:
  static int& counter() {
    static int n = 0;
    return n;
  }
  fs::path dir_;
  pid_t pid_ = -1;
  IoThread io_;
  std::shared_ptr<HttpClient> control_;
};

// Polls until `done` holds or the time is up; true when it held.
template <class F>
bool eventually(F done, std::chrono::milliseconds within = std::chrono::milliseconds(5000)) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

}  // namespace nodemeter::kube::testing
