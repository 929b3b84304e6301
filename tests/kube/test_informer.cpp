// PodInformer and KubePodSource against tests/e2e/support/fake_apiserver.py: the initial paged
// list, watch events, a dropped watch resumed from its resource version, 410 Gone (as a watch
// ERROR event and as an HTTP status) answered by a new list, 500s and slow answers answered by
// backoff, and an API server that went away: the last known pods stay.
#include <catch2/catch.hpp>
#include <mutex>
#include <nlohmann/json.hpp>

#include "agent/kube_pod_source.h"
#include "kube/pods.h"
#include "kube_test_support.h"

namespace {

using namespace nodemeter::kube;
using namespace nodemeter::kube::testing;
using namespace std::chrono_literals;
using json = nlohmann::json;

json pod_json(const std::string& name, const std::string& node, const std::string& uid,
              const std::string& container_id = {}, const std::string& ns = "default",
              json labels = json::object()) {
  json pod = {{"metadata", {{"name", name}, {"namespace", ns}, {"uid", uid}, {"labels", labels}}},
              {"spec", {{"nodeName", node}}},
              {"status", {{"phase", "Running"}, {"startTime", "2024-05-06T07:08:10Z"}}}};
  if (!container_id.empty()) {
    pod["status"]["containerStatuses"] =
        json::array({{{"name", "main"},
                      {"containerID", "containerd://" + container_id},
                      {"ready", true},
                      {"restartCount", 0},
                      {"state", {{"running", {{"startedAt", "2024-05-06T07:08:12Z"}}}}}}});
  }
  return pod;
}

struct Fixture {
  FakeApiProcess fake;
  IoThread io;
  std::shared_ptr<ApiClient> api;
  std::mutex mu;
  std::vector<std::string> logs;

  Fixture() {
    KubeConfig config;
    config.server = fake.url();
    config.token = "test-token";
    config.description = "the fake API server";
    auto client = ApiClient::create(io.io, config);
    REQUIRE(client.has_value());
    api = *client;
  }
  ~Fixture() { io.stop(); }

  std::unique_ptr<PodInformer> informer(PodWatchOptions options) {
    options.backoff_min = 50ms;
    options.backoff_max = 400ms;
    return std::make_unique<PodInformer>(io.io, api, options, [this](const std::string& m) {
      std::lock_guard lock(mu);
      logs.push_back(m);
    });
  }
  std::vector<std::string> log_lines() {
    std::lock_guard lock(mu);
    return logs;
  }
  void add(const json& pod) { fake.control("/_fake/pods", pod.dump()); }
  void faults(const json& faults) { fake.control("/_fake/faults", faults.dump()); }
  json stats() { return json::parse(fake.control("/_fake/stats")); }
};

PodWatchOptions node_options(const std::string& node) {
  PodWatchOptions options;
  options.field_selector = "spec.nodeName=" + node;
  options.page_size = 2;
  return options;
}

bool has(const PodInformer& informer, const std::string& uid) {
  return informer.pods()->count(uid) == 1;
}

}  // namespace

TEST_CASE("informer: paged list of this node's pods, then watch events", "[informer]") {
  Fixture f;
  for (int i = 0; i < 5; ++i) {
    f.add(pod_json("a" + std::to_string(i), "node-a", "uid-a" + std::to_string(i)));
  }
  f.add(pod_json("b0", "node-b", "uid-b0"));
  auto informer = f.informer(node_options("node-a"));
  std::atomic<int> changes{0};
  informer->on_change([&] { ++changes; });
  CHECK_FALSE(informer->status().synced);
  informer->start();
  REQUIRE(eventually([&] { return informer->status().synced; }));
  auto pods = informer->pods();
  CHECK(pods->size() == 5);
  CHECK(pods->count("uid-a4") == 1);
  CHECK(pods->count("uid-b0") == 0);
  CHECK(pods->at("uid-a0").name == "a0");
  CHECK(pods->at("uid-a0").node_name == "node-a");
  auto status = informer->status();
  CHECK(status.lists == 1);
  CHECK(status.healthy);
  CHECK(status.last_success.has_value());
  CHECK(status.errors == 0);
  CHECK(f.stats()["lists"] == 3);  // five pods in pages of two
  REQUIRE(eventually([&] { return informer->status().watches == 1; }));
  const int changes_after_list = changes.load();
  CHECK(changes_after_list >= 1);

  // Added on this node, added elsewhere, modified, deleted.
  f.add(pod_json("a5", "node-a", "uid-a5", "c0ffee"));
  f.add(pod_json("b1", "node-b", "uid-b1"));
  REQUIRE(eventually([&] { return has(*informer, "uid-a5"); }));
  CHECK(informer->pods()->at("uid-a5").containers.at(0).container_id == "c0ffee");
  f.add(pod_json("a0", "node-a", "uid-a0", {}, "default", {{"tier", "gold"}}));
  REQUIRE(eventually([&] { return informer->pods()->at("uid-a0").labels.count("tier") == 1; }));
  f.fake.control("/_fake/pods/delete", R"({"namespace": "default", "name": "a1"})");
  REQUIRE(eventually([&] { return !has(*informer, "uid-a1"); }));
  CHECK_FALSE(has(*informer, "uid-b1"));
  CHECK(informer->pods()->size() == 5);
  CHECK(changes.load() >= changes_after_list + 3);
  status = informer->status();
  CHECK(status.lists == 1);
  CHECK(status.events >= 3);
  CHECK(status.pods == 5);
  CHECK(status.errors == 0);
  REQUIRE(f.log_lines().size() == 1);
  CHECK(
      f.log_lines()[0].starts_with("listed 5 pods from the fake API server; watching from "
                                   "resourceVersion "));
  informer->stop();
}

TEST_CASE("informer: a dropped or ended watch resumes without a new list", "[informer]") {
  Fixture f;
  f.add(pod_json("a0", "node-a", "uid-a0"));
  auto options = node_options("node-a");
  options.watch_timeout_min = options.watch_timeout_max = 1s;  // the server ends each watch
  auto informer = f.informer(options);
  informer->start();
  REQUIRE(eventually([&] { return informer->status().watches == 1; }));

  f.faults({{"drop_watches", true}});
  f.add(pod_json("a1", "node-a", "uid-a1"));
  REQUIRE(eventually([&] { return has(*informer, "uid-a1"); }));
  // After the server ended a watch at its timeoutSeconds, the next one starts.
  REQUIRE(eventually([&] { return informer->status().watches >= 3; }, 5s));
  f.add(pod_json("a2", "node-a", "uid-a2"));
  REQUIRE(eventually([&] { return has(*informer, "uid-a2"); }));
  const auto status = informer->status();
  CHECK(status.lists == 1);
  CHECK(status.relists_gone == 0);
  CHECK(status.healthy);
  CHECK(f.stats()["lists"] == 1);
}

TEST_CASE("informer: 410 Gone lists again and converges", "[informer]") {
  Fixture f;
  f.add(pod_json("a0", "node-a", "uid-a0"));
  f.add(pod_json("a1", "node-a", "uid-a1"));
  auto informer = f.informer(node_options("node-a"));
  informer->start();
  REQUIRE(eventually([&] { return informer->status().watches == 1; }));

  SECTION("as a watch ERROR event after compaction") {
    // Changes the watch will not see: it is dropped and its resource version expired.
    f.faults({{"drop_watches", true}});
    f.faults({{"delay", 0.3}});
    f.fake.control("/_fake/pods/delete", R"({"namespace": "default", "name": "a0"})");
    f.add(pod_json("a2", "node-a", "uid-a2"));
    f.faults({{"expire", true}, {"delay", 0.0}});
    REQUIRE(eventually([&] { return informer->status().relists_gone == 1; }));
  }
  SECTION("as an HTTP status") {
    f.faults({{"gone_next", 1}, {"gone_mode", "status"}});
    f.fake.control("/_fake/pods/delete", R"({"namespace": "default", "name": "a0"})");
    f.add(pod_json("a2", "node-a", "uid-a2"));
    f.faults({{"drop_watches", true}});
    REQUIRE(eventually([&] { return informer->status().relists_gone == 1; }));
  }
  REQUIRE(eventually([&] {
    auto pods = informer->pods();
    return pods->size() == 2 && pods->count("uid-a1") && pods->count("uid-a2");
  }));
  REQUIRE(eventually([&] { return informer->status().lists == 2; }));
  const auto status = informer->status();
  CHECK(status.relists_gone == 1);
  CHECK(status.healthy);
  // Watching again from the new list.
  f.add(pod_json("a3", "node-a", "uid-a3"));
  REQUIRE(eventually([&] { return has(*informer, "uid-a3"); }));
}

TEST_CASE("informer: 500s back off, then it recovers; logged once each way", "[informer]") {
  Fixture f;
  f.add(pod_json("a0", "node-a", "uid-a0"));
  auto informer = f.informer(node_options("node-a"));
  informer->start();
  REQUIRE(eventually([&] { return informer->status().watches == 1; }));

  // A watch that lived (a bookmark came) and is dropped is resumed at once: no error.
  f.faults({{"bookmark_interval", 0.1}});
  REQUIRE(eventually([&] { return informer->status().events >= 1; }));
  f.faults({{"drop_watches", true}});
  REQUIRE(eventually([&] { return informer->status().watches == 2; }));
  CHECK(informer->status().errors == 0);
  REQUIRE(eventually([&] { return informer->status().events >= 2; }));

  f.faults({{"fail_next", 4}, {"fail_status", 500}});
  const auto start = std::chrono::steady_clock::now();
  f.faults({{"drop_watches", true}});
  REQUIRE(eventually([&] {
    return informer->status().last_error.ends_with(
        "HTTP 500: an error on the server (fault injected)");
  }));
  CHECK_FALSE(informer->status().healthy);
  REQUIRE(eventually([&] { return informer->status().watches == 3; }, 8s));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  auto status = informer->status();
  CHECK(status.healthy);
  CHECK(status.errors == 4);
  // Backoff: 50, 100, 200, 400 ms at most, at least half of each.
  CHECK(elapsed >= 350ms);
  CHECK(status.lists == 1);
  CHECK(informer->pods()->size() == 1);
  f.add(pod_json("a1", "node-a", "uid-a1"));
  REQUIRE(eventually([&] { return has(*informer, "uid-a1"); }));

  const auto logs = f.log_lines();
  REQUIRE(logs.size() == 3);
  CHECK_THAT(logs[1], Catch::Contains("HTTP 500") &&
                          Catch::EndsWith("; retrying with backoff, keeping 1 known pods"));
  CHECK(logs[2] == "the API server answers again; 1 pods known");
}

TEST_CASE("informer: slow answers time out, then the list succeeds", "[informer]") {
  Fixture f;
  f.add(pod_json("a0", "node-a", "uid-a0"));
  f.faults({{"delay", 1.0}});
  auto options = node_options("node-a");
  options.list_timeout = 200ms;
  auto informer = f.informer(options);
  informer->start();
  REQUIRE(eventually([&] { return informer->status().errors >= 1; }));
  CHECK_FALSE(informer->status().synced);
  CHECK_THAT(informer->status().last_error, Catch::EndsWith("no answer within 200 ms"));
  CHECK(informer->pods()->empty());
  f.faults({{"delay", 0.0}});
  REQUIRE(eventually([&] { return informer->status().synced; }));
  CHECK(informer->pods()->size() == 1);
}

TEST_CASE("informer: connections closed without an answer are errors, then it recovers",
          "[informer]") {
  Fixture f;
  f.add(pod_json("a0", "node-a", "uid-a0"));
  f.faults({{"refuse_next", 2}});
  auto informer = f.informer(node_options("node-a"));
  informer->start();
  REQUIRE(eventually([&] { return informer->status().synced; }));
  const auto status = informer->status();
  CHECK(status.errors == 2);
  CHECK(status.lists == 1);
  CHECK(status.healthy);
  CHECK(f.stats()["refused"] == 2);
  CHECK(informer->pods()->size() == 1);
}

TEST_CASE("informer: namespace and label selector (agents found by the aggregator)", "[informer]") {
  Fixture f;
  const json agent = {{"app", "nodemeter"}};
  f.add(pod_json("agent-1", "n1", "u1", {}, "monitoring", agent));
  f.add(pod_json("agent-2", "n2", "u2", {}, "monitoring", agent));
  f.add(pod_json("other", "n1", "u3", {}, "monitoring", {{"app", "prometheus"}}));
  f.add(pod_json("agent-x", "n1", "u4", {}, "default", agent));
  PodWatchOptions options;
  options.namespace_ = "monitoring";
  options.label_selector = "app=nodemeter";
  auto informer = f.informer(options);
  informer->start();
  REQUIRE(eventually([&] { return informer->status().synced; }));
  auto pods = informer->pods();
  CHECK(pods->size() == 2);
  CHECK(pods->count("u1") == 1);
  CHECK(pods->count("u2") == 1);
  REQUIRE(eventually([&] { return informer->status().watches == 1; }));
  f.add(pod_json("agent-3", "n3", "u5", {}, "monitoring", agent));
  f.add(pod_json("agent-y", "n3", "u6", {}, "default", agent));
  REQUIRE(eventually([&] { return has(*informer, "u5"); }));
  CHECK_FALSE(has(*informer, "u6"));
}

TEST_CASE("informer: a wrong token is an error, not pods", "[informer]") {
  FakeApiProcess fake;
  IoThread io;
  KubeConfig config;
  config.server = fake.url();
  config.token = "wrong";
  auto api = ApiClient::create(io.io, config);
  REQUIRE(api.has_value());
  PodInformer informer(io.io, *api, {});
  informer.start();
  REQUIRE(eventually([&] { return informer.status().errors >= 1; }));
  CHECK(informer.status().last_error == "listing pods: HTTP 401: Unauthorized");
  CHECK_FALSE(informer.status().synced);
  informer.stop();
  io.stop();
}

TEST_CASE("kubernetes pod source: names from the API, last known state when it is gone",
          "[kube_pod_source]") {
  Fixture f;
  f.add(pod_json("web", "node-a", "uid-web", "abc123", "shop", {{"app", "web"}}));
  auto informer = std::shared_ptr<PodInformer>(f.informer(node_options("node-a")));
  informer->start();
  REQUIRE(eventually([&] { return informer->status().synced; }));

  nodemeter::agent::KubePodSource source(informer);
  CHECK(source.name() == "kubernetes");
  source.refresh({});
  auto pod = source.pod("uid-web");
  REQUIRE(pod.has_value());
  CHECK(pod->name == "web");
  CHECK(pod->namespace_ == "shop");
  CHECK(pod->labels.at("app") == "web");
  CHECK(pod->phase == "Running");
  CHECK(pod->start_time == parse_kube_time("2024-05-06T07:08:10Z"));
  auto container = source.container("uid-web", "abc123");
  REQUIRE(container.has_value());
  CHECK(container->name == "main");
  CHECK_FALSE(container->is_sandbox);
  CHECK(container->start_time == parse_kube_time("2024-05-06T07:08:12Z"));
  // Unknown to the API: left to the next source.
  CHECK_FALSE(source.pod("uid-unknown").has_value());
  CHECK_FALSE(source.container("uid-web", "sandbox-id").has_value());
  CHECK_FALSE(source.container("uid-other", "abc123").has_value());

  // A pod that appears later is named from the next pass on.
  f.add(pod_json("late", "node-a", "uid-late", "def456"));
  REQUIRE(eventually([&] { return has(*informer, "uid-late"); }));
  CHECK_FALSE(source.pod("uid-late").has_value());
  source.refresh({});
  CHECK(source.pod("uid-late")->name == "late");
  CHECK(source.container("uid-late", "def456")->name == "main");

  // The API server goes away: the last known pods keep answering; the status says so.
  f.fake.kill();
  REQUIRE(eventually([&] { return !source.status().healthy; }));
  source.refresh({});
  CHECK(source.pod("uid-web")->name == "web");
  CHECK(source.container("uid-late", "def456")->name == "main");
  const auto status = source.status();
  CHECK(status.synced);
  CHECK(status.errors >= 1);
  CHECK(status.pods == 2);
  CHECK_FALSE(status.last_error.empty());
  informer->stop();
}

TEST_CASE("kubernetes pod source over any pod map", "[kube_pod_source]") {
  auto map = std::make_shared<PodMap>();
  Pod pod;
  pod.uid = "u1";
  pod.name = "";
  pod.phase = "";
  pod.creation_timestamp = parse_kube_time("2024-01-01T00:00:00Z");
  ContainerStatus c;
  c.name = "app";
  c.container_id = "id1";
  pod.containers.push_back(c);
  (*map)["u1"] = pod;
  std::shared_ptr<const PodMap> current = map;
  nodemeter::agent::KubePodSource source([&] { return current; });
  source.refresh({});
  auto info = source.pod("u1");
  REQUIRE(info.has_value());
  CHECK(info->name == "u1");                          // no name: the uid, as other sources do
  CHECK(info->phase == "Running");                    // no phase: the default of a pod with cgroups
  CHECK(info->start_time == pod.creation_timestamp);  // no startTime: its creation
  CHECK(source.container("u1", "id1")->name == "app");
  CHECK(source.status().synced);
  CHECK(source.status().pods == 1);

  current = std::make_shared<const PodMap>();
  CHECK(source.container("u1", "id1").has_value());  // until the next pass
  source.refresh({});
  CHECK_FALSE(source.pod("u1").has_value());
  CHECK_FALSE(source.container("u1", "id1").has_value());
}

TEST_CASE("kubeconfig with a client certificate reaches the fake API server over TLS",
          "[informer][tls]") {
  const Pki pki = make_pki("fake-tls");
  FakeApiProcess fake({"--tls-cert", pki.server_crt().string(), "--tls-key",
                       pki.server_key().string(), "--client-ca", pki.ca_crt().string()});
  // The control API is plain HTTP only in the library's eyes; over TLS the test adds pods
  // through a client that trusts the CA.
  IoThread io;
  TlsClientOptions trust;
  trust.ca_file = pki.ca_crt();
  auto control = HttpClient::create(io.io, "https://127.0.0.1:" + std::to_string(fake.port), trust);
  REQUIRE(control.has_value());
  HttpRequest add;
  add.method = boost::beast::http::verb::post;
  add.target = "/_fake/pods";
  add.body = pod_json("tls-pod", "node-a", "uid-tls").dump();
  REQUIRE(call(**control, add)->status == 200);

  const auto dir = temp_dir("fake-tls-kubeconfig");
  const std::string ca_data = [&] {
    // base64 of the CA file, as kubectl writes certificate-authority-data.
    const std::string b64 = dir / "ca.b64";
    run("openssl base64 -A -in " + pki.ca_crt().string() + " -out " + b64);
    return read_text(b64);
  }();
  write_file(dir / "config",
             "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
             "clusters:\n- name: fake\n  cluster:\n    server: https://localhost:" +
                 std::to_string(fake.port) + "\n    certificate-authority-data: " + ca_data +
                 "\n"
                 "users:\n- name: node\n  user:\n    client-certificate: client.crt\n"
                 "    client-key: client.key\n"
                 "contexts:\n- name: fake\n  context: {cluster: fake, user: node}\n");
  std::filesystem::copy_file(pki.client_crt(), dir / "client.crt");
  std::filesystem::copy_file(pki.client_key(), dir / "client.key");
  auto config = load_kubeconfig(dir / "config");
  INFO((config ? std::string() : config.error()));
  REQUIRE(config.has_value());
  CHECK(config->tls.ca_pem == read_text(pki.ca_crt()));
  CHECK(config->tls.client_cert_file == (dir / "client.crt").string());
  auto api = ApiClient::create(io.io, *config);
  INFO((api ? std::string() : api.error()));
  REQUIRE(api.has_value());
  auto version = call(**api, get("/version"));
  INFO((version ? std::string() : version.error()));
  REQUIRE(version.has_value());
  CHECK(version->status == 200);
  CHECK(json::parse(version->body)["gitVersion"] == "v1.30.0-fake");

  PodInformer informer(io.io, *api, node_options("node-a"));
  informer.start();
  REQUIRE(eventually([&] { return informer.status().synced; }));
  CHECK(informer.pods()->count("uid-tls") == 1);
  informer.stop();

  // Without the client certificate the server does not know who asks.
  config->tls.client_cert_file.clear();
  config->tls.client_key_file.clear();
  auto anonymous = ApiClient::create(io.io, *config);
  REQUIRE(anonymous.has_value());
  CHECK(call(**anonymous, get("/version"))->status == 401);
  io.stop();
}

TEST_CASE("the fake API server's reviews and ConfigMap have the real shapes", "[fake_apiserver]") {
  Fixture f;
  f.fake.control("/_fake/tokens",
                 R"({"agent-token": {"username": "system:serviceaccount:monitoring:nodemeter",
                                     "uid": "sa-1", "groups": ["system:serviceaccounts"]}})");
  f.fake.control("/_fake/policy",
                 R"({"rules": [{"group": "system:serviceaccounts", "verb": "get",
                                "resource": "nodes", "subresource": "metrics"}]})");
  auto post = [&](const std::string& target, const json& body) {
    HttpRequest request;
    request.method = boost::beast::http::verb::post;
    request.target = target;
    request.body = body.dump();
    auto result = call(*f.api, request);
    REQUIRE(result.has_value());
    CHECK(result->status == 201);
    return json::parse(result->body);
  };
  const json token_review = {{"apiVersion", "authentication.k8s.io/v1"},
                             {"kind", "TokenReview"},
                             {"spec", {{"token", "agent-token"}}}};
  auto reviewed = post("/apis/authentication.k8s.io/v1/tokenreviews", token_review);
  CHECK(reviewed["kind"] == "TokenReview");
  CHECK(reviewed["status"]["authenticated"] == true);
  CHECK(reviewed["status"]["user"]["username"] == "system:serviceaccount:monitoring:nodemeter");
  CHECK(reviewed["status"]["user"]["groups"] == json::array({"system:serviceaccounts"}));
  auto unknown = post("/apis/authentication.k8s.io/v1/tokenreviews",
                      {{"kind", "TokenReview"}, {"spec", {{"token", "nope"}}}});
  CHECK(unknown["status"]["authenticated"] == false);

  auto sar = [&](const std::string& subresource) {
    return post("/apis/authorization.k8s.io/v1/subjectaccessreviews",
                {{"apiVersion", "authorization.k8s.io/v1"},
                 {"kind", "SubjectAccessReview"},
                 {"spec",
                  {{"user", "system:serviceaccount:monitoring:nodemeter"},
                   {"groups", {"system:serviceaccounts"}},
                   {"resourceAttributes",
                    {{"verb", "get"},
                     {"resource", "nodes"},
                     {"subresource", subresource},
                     {"name", "node-a"}}}}}});
  };
  CHECK(sar("metrics")["status"]["allowed"] == true);
  CHECK(sar("stats")["status"]["allowed"] == false);
  const json recorded = json::parse(f.fake.control("/_fake/reviews"));
  CHECK(recorded["tokenreviews"].size() == 2);
  REQUIRE(recorded["subjectaccessreviews"].size() == 2);
  CHECK(recorded["subjectaccessreviews"][1]["spec"]["resourceAttributes"]["subresource"] ==
        "stats");

  const std::string configmap =
      "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication";
  CHECK(call(*f.api, get(configmap))->status == 404);
  f.fake.control("/_fake/configmap",
                 R"({"requestheader-allowed-names": "[\"front-proxy-client\"]",
                     "requestheader-username-headers": "[\"X-Remote-User\"]"})");
  auto found = call(*f.api, get(configmap));
  REQUIRE(found->status == 200);
  CHECK(json::parse(found->body)["data"]["requestheader-allowed-names"] ==
        "[\"front-proxy-client\"]");
}
