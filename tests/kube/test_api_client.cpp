// Kubeconfig and in-cluster configuration from files the test writes, and the API client's
// headers: bearer token (re-read when its file changes) and Accept.
#include <stdlib.h>

#include <catch2/catch.hpp>

#include "kube/api_client.h"
#include "kube_test_support.h"

namespace {

using namespace nodemeter::kube;
using namespace nodemeter::kube::testing;
using namespace std::chrono_literals;
namespace http = boost::beast::http;

// "Y2EtcGVt" is "ca-pem", "Y2VydC1wZW0=" is "cert-pem", "a2V5LXBlbQ==" is "key-pem".
const char* kKubeconfig = R"(apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev-cluster
  cluster:
    server: https://10.0.0.1:6443
    certificate-authority: certs/ca.crt
- name: prod-cluster
  cluster:
    server: https://prod.example:443/prefix
    certificate-authority-data: Y2EtcGVt
    tls-server-name: api.prod.example
- name: lab-cluster
  cluster:
    server: https://lab.example
    insecure-skip-tls-verify: true
contexts:
- name: dev
  context:
    cluster: dev-cluster
    user: dev-user
- name: prod
  context:
    cluster: prod-cluster
    user: prod-user
    namespace: kube-system
- name: lab
  context:
    cluster: lab-cluster
    user: lab-user
- name: anonymous
  context:
    cluster: lab-cluster
- name: broken
  context:
    cluster: nowhere
    user: dev-user
- name: exec
  context:
    cluster: lab-cluster
    user: exec-user
users:
- name: dev-user
  user:
    token: dev-token
    client-certificate: certs/client.crt
    client-key: /abs/client.key
- name: prod-user
  user:
    client-certificate-data: Y2VydC1wZW0=
    client-key-data: a2V5LXBlbQ==
- name: lab-user
  user:
    tokenFile: lab.token
- name: exec-user
  user:
    exec:
      command: aws
)";

}  // namespace

TEST_CASE("kubeconfig: the current context with a token and certificate files", "[kubeconfig]") {
  const auto dir = temp_dir("kubeconfig");
  write_file(dir / "config", kKubeconfig);
  auto config = load_kubeconfig(dir / "config");
  INFO((config ? std::string() : config.error()));
  REQUIRE(config.has_value());
  CHECK(config->server == "https://10.0.0.1:6443");
  CHECK(config->tls.ca_file == (dir / "certs/ca.crt").string());
  CHECK(config->tls.ca_pem.empty());
  CHECK(config->token == "dev-token");
  CHECK(config->token_file.empty());
  CHECK(config->tls.client_cert_file == (dir / "certs/client.crt").string());
  CHECK(config->tls.client_key_file == "/abs/client.key");
  CHECK_FALSE(config->tls.insecure_skip_verify);
  CHECK(config->description == "kubeconfig " + (dir / "config").string() + " (context dev)");
}

TEST_CASE("kubeconfig: inline data, server names, insecure, token files", "[kubeconfig]") {
  const auto dir = temp_dir("kubeconfig2");
  write_file(dir / "config", kKubeconfig);

  auto prod = load_kubeconfig(dir / "config", "prod");
  REQUIRE(prod.has_value());
  CHECK(prod->server == "https://prod.example:443/prefix");
  CHECK(prod->tls.ca_pem == "ca-pem");
  CHECK(prod->tls.ca_file.empty());
  CHECK(prod->tls.server_name == "api.prod.example");
  CHECK(prod->tls.client_cert_pem == "cert-pem");
  CHECK(prod->tls.client_key_pem == "key-pem");
  CHECK(prod->token.empty());

  auto lab = load_kubeconfig(dir / "config", "lab");
  REQUIRE(lab.has_value());
  CHECK(lab->tls.insecure_skip_verify);
  CHECK(lab->token_file == dir / "lab.token");
  CHECK(lab->server == "https://lab.example");

  auto anonymous = load_kubeconfig(dir / "config", "anonymous");
  REQUIRE(anonymous.has_value());
  CHECK(anonymous->token.empty());
  CHECK(anonymous->tls.client_cert_file.empty());
}

TEST_CASE("kubeconfig: errors name the file and what is wrong", "[kubeconfig]") {
  const auto dir = temp_dir("kubeconfig3");
  const auto file = dir / "config";
  const std::string where = "kubeconfig " + file.string();
  write_file(file, kKubeconfig);
  CHECK(load_kubeconfig(file, "missing").error() == where + " has no context \"missing\"");
  CHECK(load_kubeconfig(file, "broken").error() ==
        where + " has no cluster \"nowhere\" (context \"broken\")");
  CHECK_THAT(load_kubeconfig(file, "exec").error(),
             Catch::StartsWith(where + ": user \"exec-user\" authenticates with an exec"));

  CHECK_THAT(load_kubeconfig(dir / "absent").error(),
             Catch::StartsWith("kubeconfig " + (dir / "absent").string() +
                               " cannot be read: No such file or directory"));

  write_file(file, "clusters: [unclosed\n  - {\n");
  CHECK_THAT(load_kubeconfig(file).error(), Catch::StartsWith(where + " is not valid YAML: "));

  write_file(file, "just a string\n");
  CHECK(load_kubeconfig(file).error() == where + " is not a kubeconfig (not a YAML mapping)");

  write_file(file, "apiVersion: v1\nclusters: []\n");
  CHECK(load_kubeconfig(file).error() == where + " has no current-context");

  write_file(file,
             "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
             "clusters: [{name: k, cluster: {server: 'https://h', "
             "certificate-authority-data: '!!notbase64'}}]\n");
  CHECK(load_kubeconfig(file).error() ==
        where + ": certificate-authority-data is not valid base64");

  write_file(file,
             "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
             "clusters: [{name: k, cluster: {server: 'ftp://h'}}]\n");
  CHECK(load_kubeconfig(file).error() ==
        where + ": URL \"ftp://h\" must start with https:// or http://");

  write_file(file,
             "current-context: c\ncontexts: [{name: c, context: {cluster: k}}]\n"
             "clusters: [{name: k, cluster: {}}]\n");
  CHECK(load_kubeconfig(file).error() == where + ": cluster \"k\" has no server");

  write_file(file, std::string("\x00\x01\xff\xfe garbage", 12));
  CHECK_FALSE(load_kubeconfig(file).has_value());
}

TEST_CASE("in-cluster configuration from the environment and service account files",
          "[in_cluster]") {
  const auto dir = temp_dir("incluster");
  InClusterPaths paths{dir / "token", dir / "ca.crt", dir / "namespace"};
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  CHECK(load_in_cluster(paths).error() == "KUBERNETES_SERVICE_HOST is not set");
  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  CHECK(load_in_cluster(paths).error() == "KUBERNETES_SERVICE_PORT is not set");
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  CHECK(load_in_cluster(paths).error() == "the service account token " + paths.token.string() +
                                              " cannot be read: No such file or directory");
  write_file(paths.token, "\n");
  CHECK(load_in_cluster(paths).error() ==
        "the service account token " + paths.token.string() + " is empty");
  write_file(paths.token, "sa-token\n");
  CHECK(load_in_cluster(paths).error() ==
        "the service account CA bundle " + paths.ca.string() + " does not exist");
  write_file(paths.ca, "pem");
  auto config = load_in_cluster(paths);
  REQUIRE(config.has_value());
  CHECK(config->server == "https://10.96.0.1:443");
  CHECK(config->token_file == paths.token);
  CHECK(config->tls.ca_file == paths.ca.string());
  CHECK(config->description == "in-cluster (service account)");

  setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
  CHECK(load_in_cluster(paths)->server == "https://[fd00::1]:443");
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
}

TEST_CASE("the API client sends the token, re-read when its file changes", "[api_client]") {
  TestServer server([](const nodemeter::api::Request& request) {
    nodemeter::api::Response response{http::status::ok, request.version()};
    response.body() = std::string(request[http::field::authorization]) + "|" +
                      std::string(request[http::field::accept]);
    return response;
  });
  const auto dir = temp_dir("token");
  IoThread client_thread;

  KubeConfig fixed;
  fixed.server = server.url(false);
  fixed.token = "fixed";
  auto fixed_client = ApiClient::create(client_thread.io, fixed);
  REQUIRE(fixed_client.has_value());
  auto answer = call(**fixed_client, get("/api"));
  REQUIRE(answer.has_value());
  CHECK(answer->body == "Bearer fixed|application/json");

  KubeConfig rotating;
  rotating.server = server.url(false);
  rotating.token_file = dir / "token";
  rotating.description = "test";
  CHECK(ApiClient::create(client_thread.io, rotating).error() ==
        "test: cannot read the token file " + rotating.token_file.string() +
            ": No such file or directory");
  write_file(rotating.token_file, "first\n");
  auto client = ApiClient::create(client_thread.io, rotating);
  REQUIRE(client.has_value());
  CHECK(call(**client, get("/a"))->body == "Bearer first|application/json");
  CHECK(call(**client, get("/b"))->body == "Bearer first|application/json");

  // Rotation as the kubelet does it: a new file renamed over the old one (new inode).
  write_file(dir / "token.new", "second\n");
  std::filesystem::rename(dir / "token.new", rotating.token_file);
  CHECK(call(**client, get("/c"))->body == "Bearer second|application/json");

  // Rewritten in place with the same length: the modification time tells.
  std::this_thread::sleep_for(20ms);
  write_file(rotating.token_file, "third_\n");
  CHECK(call(**client, get("/d"))->body == "Bearer third_|application/json");

  // A vanished file keeps the last token.
  std::filesystem::remove(rotating.token_file);
  CHECK(call(**client, get("/e"))->body == "Bearer third_|application/json");

  // An explicit Accept is kept.
  auto request = get("/f");
  request.headers = {{"Accept", "application/json;as=Table;g=meta.k8s.io;v=v1"}};
  CHECK(call(**client, request)->body ==
        "Bearer third_|application/json;as=Table;g=meta.k8s.io;v=v1");
}
