// The Kubernetes API server as a client sees it: where it is and how to authenticate
// (in-cluster service account or a kubeconfig), and requests that carry the bearer token, which
// is re-read from its file when it rotates (projected service-account tokens change hourly).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/system/result.hpp>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "kube/http_client.h"

namespace nodemeter::kube {

struct KubeConfig {
  std::string server;  // base URL, "https://10.96.0.1:443"
  TlsClientOptions tls;
  std::string token;                 // a fixed bearer token (kubeconfig `token`)
  std::filesystem::path token_file;  // or a file re-read when it changes (in-cluster, tokenFile)
  std::string description;  // for logs: "in-cluster (service account)", "kubeconfig /x (ctx)"
};

struct InClusterPaths {
  std::filesystem::path token = "/var/run/secrets/kubernetes.io/serviceaccount/token";
  std::filesystem::path ca = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
  std::filesystem::path namespace_file = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
};

// From $KUBERNETES_SERVICE_HOST / $KUBERNETES_SERVICE_PORT and the service account files. The
// error says which is missing; callers use it to decide that they do not run in a cluster.
boost::system::result<KubeConfig, std::string> load_in_cluster(const InClusterPaths& paths = {});
// The current context (or `context`) of a kubeconfig file: server, certificate-authority(-data),
// insecure-skip-tls-verify, token / tokenFile, client-certificate(-data) / client-key(-data).
// Relative file paths are taken from the kubeconfig's directory.
boost::system::result<KubeConfig, std::string> load_kubeconfig(const std::filesystem::path& file,
                                                               std::string_view context = {});
// What a command runs with: `kubeconfig` where given (its errors are errors), else the
// in-cluster configuration where present, else nullopt with the reason in `why_not`.
boost::system::result<std::optional<KubeConfig>, std::string> load_config(
    const std::filesystem::path& kubeconfig, std::string* why_not = nullptr);

class ApiClient {
 public:
  static boost::system::result<std::shared_ptr<ApiClient>, std::string> create(
      boost::asio::io_context& io, KubeConfig config);
  virtual ~ApiClient() = default;

  // As HttpClient, with `Authorization: Bearer …` and `Accept: application/json` added.
  virtual void request(HttpRequest request, std::function<void(HttpResult)> done) = 0;
  virtual std::shared_ptr<StreamHandle> stream(HttpRequest request, StreamCallbacks callbacks) = 0;
  virtual void shutdown() = 0;
  virtual const KubeConfig& config() const = 0;
  // The bearer token requests carry now (the token file re-read when it changed), for callers
  // that authenticate elsewhere with the same identity (the aggregator towards the agents).
  virtual std::string bearer_token() = 0;
};

}  // namespace nodemeter::kube
