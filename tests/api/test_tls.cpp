// TLS for the server against real handshakes on the loopback: the self-signed pair a client can
// verify, the protocol floor, the cipher suites, client certificates seen in Peer (verified or
// not), files and their errors. Clients are blocking Asio SSL streams with a receive timeout.
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "api/auth.h"
#include "api/server.h"
#include "api/tls.h"
#include "tests/api/tls_test_certs.h"

namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using namespace nodemeter::api;
using nodemeter::test::PemPair;
using nodemeter::test::TestCa;

class TestServer {
 public:
  TestServer(std::shared_ptr<ssl::context> tls, AsyncHandler handler) {
    ServerOptions options;
    options.listen = {"127.0.0.1:0"};
    options.tls = std::move(tls);
    server_ = std::make_unique<Server>(io_, std::move(options), std::move(handler));
    auto started = server_->start();
    if (!started) FAIL(started.error());
    thread_ = std::thread([this] { io_.run(); });
  }
  ~TestServer() {
    io_.stop();
    thread_.join();
    server_.reset();
  }
  unsigned short port() const { return server_->local_endpoints().at(0).port(); }

 private:
  net::io_context io_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

// Answers with what the server knows of its peer.
void describe_peer(const Request&, const Peer& peer, Reply reply) {
  Response response{http::status::ok, 11};
  std::string body = "address=" + peer.address.to_string() + " tls=" + (peer.tls ? "1" : "0");
  if (peer.client_cert) {
    body += " cn=" + peer.client_cert->common_name + " o=";
    for (const std::string& o : peer.client_cert->organizations)
      body += o + ";";
    body += std::string(" verified=") + (peer.client_cert->verified ? "1" : "0");
  } else {
    body += " no-cert";
  }
  response.body() = body;
  response.prepare_payload();
  reply(std::move(response));
}

struct ClientSetup {
  std::string trust_pem;    // verify the server against this; empty: no verification
  std::string verify_host;  // and check this name (DNS or IP) against its SANs
  std::optional<PemPair> client_cert;
  int max_version = 0;  // TLS1_2_VERSION to play a client that cannot do 1.3
  std::string ciphers;  // TLS 1.2 cipher list to offer
};

ClientSetup verifying(std::string trust_pem, std::string host) {
  ClientSetup setup;
  setup.trust_pem = std::move(trust_pem);
  setup.verify_host = std::move(host);
  return setup;
}

ClientSetup tls12_only(std::string ciphers = "") {
  ClientSetup setup;
  setup.max_version = TLS1_2_VERSION;
  setup.ciphers = std::move(ciphers);
  return setup;
}

ClientSetup presenting(PemPair cert) {
  ClientSetup setup;
  setup.client_cert = std::move(cert);
  return setup;
}

struct Outcome {
  bool handshake = false;
  std::string error;
  unsigned status = 0;
  std::string body;
};

Outcome tls_get(unsigned short port, const ClientSetup& setup, const std::string& target = "/") {
  net::io_context io;
  ssl::context context(ssl::context::tls_client);
  if (!setup.trust_pem.empty()) {
    context.add_certificate_authority(net::buffer(setup.trust_pem));
    context.set_verify_mode(ssl::verify_peer);
    if (!setup.verify_host.empty()) {
      context.set_verify_callback(ssl::host_name_verification(setup.verify_host));
    }
  } else {
    context.set_verify_mode(ssl::verify_none);
  }
  if (setup.client_cert) {
    context.use_certificate_chain(net::buffer(setup.client_cert->cert_pem));
    context.use_private_key(net::buffer(setup.client_cert->key_pem), ssl::context::pem);
  }
  if (setup.max_version != 0)
    SSL_CTX_set_max_proto_version(context.native_handle(), setup.max_version);
  if (!setup.ciphers.empty())
    SSL_CTX_set_cipher_list(context.native_handle(), setup.ciphers.c_str());

  ssl::stream<tcp::socket> stream(io, context);
  stream.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  timeval timeout{5, 0};
  setsockopt(stream.next_layer().native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout,
             sizeof timeout);
  Outcome outcome;
  beast::error_code ec;
  stream.handshake(ssl::stream_base::client, ec);
  if (ec) {
    outcome.error = ec.message();
    return outcome;
  }
  outcome.handshake = true;
  http::request<http::empty_body> request{http::verb::get, target, 11};
  request.set(http::field::host, "localhost");
  http::write(stream, request, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  if (!ec) http::read(stream, buffer, response, ec);
  if (ec) {
    outcome.error = ec.message();
    return outcome;
  }
  outcome.status = response.result_int();
  outcome.body = response.body();
  return outcome;
}

std::shared_ptr<ssl::context> context_or_fail(const ServerTlsOptions& options) {
  auto context = make_server_tls(options);
  if (!context) FAIL(context.error());
  return *context;
}

struct TempDir {
  TempDir() {
    char pattern[] = "/tmp/nodemeter-tls-XXXXXX";
    path = ::mkdtemp(pattern);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::string file = (path / name).string();
    std::ofstream(file) << text;
    return file;
  }
  std::filesystem::path path;
};

}  // namespace

TEST_CASE("a self-signed server is verified by a client that trusts its certificate", "[tls]") {
  ServerTlsOptions options;
  options.self_signed = true;
  options.self_signed_hosts = {"nodemeter.example", "127.0.0.1"};
  auto context = context_or_fail(options);
  const std::string served = served_certificate_pem(*context);
  REQUIRE(served.starts_with("-----BEGIN CERTIFICATE-----"));
  TestServer server(context, describe_peer);

  auto by_ip = tls_get(server.port(), verifying(served, "127.0.0.1"));
  CHECK(by_ip.handshake);
  CHECK(by_ip.status == 200);
  CHECK(by_ip.body == "address=127.0.0.1 tls=1 no-cert");
  CHECK(tls_get(server.port(), verifying(served, "nodemeter.example")).status == 200);

  // A name outside the SANs, and a client trusting another CA, both refuse the server.
  CHECK_FALSE(tls_get(server.port(), verifying(served, "other.example")).handshake);
  TestCa other("other CA");
  CHECK_FALSE(tls_get(server.port(), verifying(other.cert_pem(), "127.0.0.1")).handshake);
}

TEST_CASE("self-signed pairs: default hosts, SANs, validity and errors", "[tls]") {
  auto pair = make_self_signed_pair({});
  REQUIRE(pair.has_value());
  std::unique_ptr<BIO, decltype(&BIO_free_all)> bio(
      BIO_new_mem_buf(pair->cert_pem.data(), static_cast<int>(pair->cert_pem.size())),
      BIO_free_all);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
  REQUIRE(cert);
  CHECK(X509_check_host(cert.get(), "localhost", 0, 0, nullptr) == 1);
  CHECK(X509_check_ip_asc(cert.get(), "127.0.0.1", 0) == 1);
  CHECK(X509_check_ip_asc(cert.get(), "::1", 0) == 1);
  CHECK(X509_check_host(cert.get(), "example.com", 0, 0, nullptr) == 0);
  // A year, give or take the minute of slack before now.
  int days = 0;
  int seconds = 0;
  REQUIRE(ASN1_TIME_diff(&days, &seconds, X509_get0_notBefore(cert.get()),
                         X509_get0_notAfter(cert.get())) == 1);
  CHECK(days == 365);
  CHECK(X509_check_purpose(cert.get(), X509_PURPOSE_SSL_SERVER, 0) == 1);
  CHECK(pair->key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));

  auto bad = make_self_signed_pair({"good.example", "bad host"});
  REQUIRE(bad.has_error());
  CHECK(bad.error() ==
        "self-signed certificate host \"bad host\" is neither an IP address nor a "
        "DNS name");
}

TEST_CASE("a TLS 1.3 floor refuses a client that stops at 1.2", "[tls]") {
  ServerTlsOptions options;
  options.self_signed = true;
  SECTION("1.3") {
    options.min_version = "VersionTLS13";
    TestServer server(context_or_fail(options), describe_peer);
    auto old = tls_get(server.port(), tls12_only());
    CHECK_FALSE(old.handshake);
    CHECK(tls_get(server.port(), {}).status == 200);
  }
  SECTION("1.2, the default, serves both") {
    TestServer server(context_or_fail(options), describe_peer);
    CHECK(tls_get(server.port(), tls12_only()).status == 200);
    CHECK(tls_get(server.port(), {}).status == 200);
    // Only forward-secret AEAD suites: a TLS 1.2 client offering CBC with RSA key exchange fails.
    CHECK_FALSE(tls_get(server.port(), tls12_only("AES128-SHA")).handshake);
    CHECK(tls_get(server.port(), tls12_only("ECDHE-ECDSA-AES128-GCM-SHA256")).status == 200);
  }
}

TEST_CASE("client certificates are asked for, not required, and their verification reported",
          "[tls]") {
  TestCa front_proxy_ca("front-proxy-ca");
  TestCa stranger_ca("stranger-ca");
  ServerTlsOptions options;
  options.self_signed = true;
  options.client_ca_pem = front_proxy_ca.cert_pem();
  TestServer server(context_or_fail(options), describe_peer);

  auto trusted = tls_get(
      server.port(),
      presenting(front_proxy_ca.issue("front-proxy-client", {"system:masters", "ops"}, true)));
  CHECK(trusted.body ==
        "address=127.0.0.1 tls=1 cn=front-proxy-client o=system:masters;ops; verified=1");

  auto untrusted =
      tls_get(server.port(), presenting(stranger_ca.issue("front-proxy-client", {}, true)));
  CHECK(untrusted.handshake);
  CHECK(untrusted.body == "address=127.0.0.1 tls=1 cn=front-proxy-client o= verified=0");

  // A serving certificate is not a client certificate (extended key usage).
  auto wrong_usage = tls_get(server.port(), presenting(front_proxy_ca.issue("server", {}, false)));
  CHECK(wrong_usage.body == "address=127.0.0.1 tls=1 cn=server o= verified=0");

  CHECK(tls_get(server.port(), {}).body == "address=127.0.0.1 tls=1 no-cert");
}

TEST_CASE("a certificate pair from files, and errors naming the file", "[tls]") {
  TempDir dir;
  TestCa ca("serving-ca");
  PemPair pair = ca.issue("localhost", {}, false, {"localhost", "127.0.0.1"});
  const std::string cert_file = dir.write("tls.crt", pair.cert_pem + ca.cert_pem());
  const std::string key_file = dir.write("tls.key", pair.key_pem);

  ServerTlsOptions options;
  options.cert_file = cert_file;
  options.key_file = key_file;
  options.self_signed = true;  // files win
  TestServer server(context_or_fail(options), describe_peer);
  CHECK(tls_get(server.port(), verifying(ca.cert_pem(), "127.0.0.1")).status == 200);

  options.key_file = dir.write("other.key", ca.issue("x", {}, false).key_pem);
  auto mismatch = make_server_tls(options);
  REQUIRE_FALSE(mismatch);
  CHECK(mismatch.error() == "TLS private key file " + options.key_file +
                                " does not match TLS certificate file " + cert_file);

  options.key_file = (dir.path / "missing.key").string();
  auto missing = make_server_tls(options);
  REQUIRE_FALSE(missing);
  CHECK(missing.error() ==
        "TLS private key file " + options.key_file + ": No such file or directory");

  options.cert_file = dir.write("garbage.crt", "not a certificate");
  options.key_file = key_file;
  auto garbage = make_server_tls(options);
  REQUIRE_FALSE(garbage);
  CHECK(garbage.error().starts_with("TLS certificate file " + options.cert_file + ": "));

  options.cert_file = cert_file;
  options.key_file = dir.write("garbage.key", "not a key");
  auto garbage_key = make_server_tls(options);
  REQUIRE_FALSE(garbage_key);
  CHECK(garbage_key.error().starts_with("TLS private key file " + options.key_file + ": "));
  CHECK(garbage_key.error().find("does not match") == std::string::npos);

  ServerTlsOptions half;
  half.cert_file = cert_file;
  CHECK(make_server_tls(half).error() ==
        "a TLS certificate file and its private key file go together: give both or neither");
  CHECK(make_server_tls(ServerTlsOptions{}).error() ==
        "TLS needs a certificate and key file, or a self-signed pair");

  ServerTlsOptions bad_ca;
  bad_ca.self_signed = true;
  bad_ca.client_ca_pem = "nothing here";
  CHECK(make_server_tls(bad_ca).error() == "the client CA bundle holds no PEM certificate");
}

TEST_CASE("TLS versions in both spellings", "[tls]") {
  CHECK(*parse_tls_version("1.2") == "1.2");
  CHECK(*parse_tls_version("VersionTLS12") == "1.2");
  CHECK(*parse_tls_version("1.3") == "1.3");
  CHECK(*parse_tls_version("VersionTLS13") == "1.3");
  CHECK(parse_tls_version("1.1").error() ==
        "TLS version \"1.1\" is not one of 1.2, 1.3 (or VersionTLS12, VersionTLS13)");
  ServerTlsOptions options;
  options.self_signed = true;
  options.min_version = "1.0";
  CHECK_FALSE(make_server_tls(options));
}

TEST_CASE("request-header authentication through a real front-proxy client certificate",
          "[tls][auth]") {
  TestCa front_proxy_ca("front-proxy-ca");
  TestCa stranger_ca("stranger-ca");
  ServerTlsOptions tls;
  tls.self_signed = true;
  tls.client_ca_pem = front_proxy_ca.cert_pem();

  GuardOptions guard_options;
  guard_options.request_header = RequestHeaderOptions{};
  guard_options.request_header->allowed_names = {"front-proxy-client"};
  std::vector<std::string> seen_users;
  std::mutex mu;
  guard_options.authorize = [&](const UserInfo& user, const Attributes&,
                                std::function<void(DecisionResult)> done) {
    {
      std::lock_guard lock(mu);
      seen_users.push_back(user.name);
    }
    done(Decision{user.name == "alice", false, ""});
  };
  auto handler = guard(guard_options, [](const Request&) {
    Response response{http::status::ok, 11};
    response.body() = "metrics";
    response.prepare_payload();
    return response;
  });
  TestServer server(context_or_fail(tls), handler);

  // A GET of the node list as kube-apiserver's front proxy sends it, user in X-Remote-User.
  auto get_as = [&](const std::optional<PemPair>& cert, const std::string& user) {
    net::io_context io;
    ssl::context context(ssl::context::tls_client);
    context.set_verify_mode(ssl::verify_none);
    if (cert) {
      context.use_certificate_chain(net::buffer(cert->cert_pem));
      context.use_private_key(net::buffer(cert->key_pem), ssl::context::pem);
    }
    ssl::stream<tcp::socket> stream(io, context);
    stream.next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server.port()));
    stream.handshake(ssl::stream_base::client);
    http::request<http::empty_body> request{http::verb::get, "/apis/metrics.k8s.io/v1beta1/nodes",
                                            11};
    request.set(http::field::host, "localhost");
    request.set("X-Remote-User", user);
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    return response;
  };

  auto front_proxy = front_proxy_ca.issue("front-proxy-client", {}, true);
  auto allowed = get_as(front_proxy, "alice");
  CHECK(allowed.result_int() == 200);
  CHECK(allowed.body() == "metrics");
  auto denied = get_as(front_proxy, "mallory");
  CHECK(denied.result_int() == 403);
  CHECK(denied.body() ==
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\","
        "\"message\":\"nodes.metrics.k8s.io is forbidden: User \\\"mallory\\\" cannot list "
        "resource \\\"nodes\\\" in API group \\\"metrics.k8s.io\\\" at the cluster scope\","
        "\"reason\":\"Forbidden\",\"details\":{\"group\":\"metrics.k8s.io\",\"kind\":\"nodes\"},"
        "\"code\":403}\n");
  // The headers count for nothing from an untrusted certificate, a name not allowed, or none.
  CHECK(get_as(stranger_ca.issue("front-proxy-client", {}, true), "alice").result_int() == 401);
  CHECK(get_as(front_proxy_ca.issue("someone-else", {}, true), "alice").result_int() == 401);
  CHECK(get_as(std::nullopt, "alice").result_int() == 401);
  std::lock_guard lock(mu);
  CHECK(seen_users == std::vector<std::string>{"alice", "mallory"});
}
