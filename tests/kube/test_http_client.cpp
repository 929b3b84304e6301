// The HTTP(S) client against api::Server on the loopback and against sockets that never answer:
// URL parsing, connection reuse, deadlines, refused connections, TLS verification (right CA, wrong
// CA, insecure, host names and IP addresses), client certificates, streamed lines.
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <catch2/catch.hpp>
#include <mutex>
#include <vector>

#include "kube/http_client.h"
#include "kube_test_support.h"

namespace {

using namespace nodemeter::kube;
using namespace nodemeter::kube::testing;
using namespace std::chrono_literals;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

nodemeter::api::Response echo(const nodemeter::api::Request& request) {
  nodemeter::api::Response response{http::status::ok, request.version()};
  response.set(http::field::content_type, "text/plain");
  std::string body = std::string(request.method_string()) + " " + std::string(request.target());
  if (auto auth = request.find(http::field::authorization); auth != request.end()) {
    body += " auth=" + std::string(auth->value());
  }
  if (!request.body().empty()) body += " body=" + request.body();
  if (request.target() == "/lines") body = "one\ntwo\r\n\nthree";
  if (request.target().ends_with("/status/404")) response.result(http::status::not_found);
  if (request.target() == "/huge") body.assign((64u << 20) + 1024, 'x');
  response.body() = body;
  return response;
}

std::shared_ptr<HttpClient> make_client(boost::asio::io_context& io, const std::string& url,
                                        const TlsClientOptions& tls = {}, size_t idle = 4) {
  auto client = HttpClient::create(io, url, tls, idle);
  INFO((client ? std::string() : client.error()));
  REQUIRE(client.has_value());
  return *client;
}

}  // namespace

TEST_CASE("base URLs parse into scheme, host, port and prefix", "[http_client]") {
  auto plain = parse_base_url("http://127.0.0.1:10261");
  REQUIRE(plain.has_value());
  CHECK_FALSE(plain->tls);
  CHECK(plain->host == "127.0.0.1");
  CHECK(plain->port == "10261");
  CHECK(plain->path_prefix.empty());

  auto defaulted = parse_base_url("https://kubernetes.default.svc");
  REQUIRE(defaulted.has_value());
  CHECK(defaulted->tls);
  CHECK(defaulted->host == "kubernetes.default.svc");
  CHECK(defaulted->port == "443");
  CHECK(parse_base_url("http://example")->port == "80");

  auto v6 = parse_base_url("https://[::1]:6443/prefix/");
  REQUIRE(v6.has_value());
  CHECK(v6->host == "::1");
  CHECK(v6->port == "6443");
  CHECK(v6->path_prefix == "/prefix");

  CHECK(parse_base_url("ftp://x").error() == "URL \"ftp://x\" must start with https:// or http://");
  CHECK(parse_base_url("https://:443").error() == "URL \"https://:443\" has no host");
  CHECK(parse_base_url("https://h:99999").error() ==
        "URL \"https://h:99999\" has a port above 65535");
  CHECK(parse_base_url("https://h:12345678901234567890").error() ==
        "URL \"https://h:12345678901234567890\" has a port above 65535");
  CHECK(parse_base_url("https://h:8a").error() ==
        "URL \"https://h:8a\" has a port that is not a number");
  CHECK(parse_base_url("https://[::1").error() ==
        "URL \"https://[::1\" has an unclosed IPv6 bracket");
  CHECK(parse_base_url("https://[::1]x").error() ==
        "URL \"https://[::1]x\" has text after the IPv6 address");
}

TEST_CASE("requests reuse one keep-alive connection", "[http_client]") {
  TestServer server(echo);
  IoThread client_thread;
  auto client = make_client(client_thread.io, server.url(false) + "/base");
  for (int i = 0; i < 20; ++i) {
    auto response = call(*client, get("/n/" + std::to_string(i)));
    REQUIRE(response.has_value());
    CHECK(response->status == 200);
    CHECK(response->body == "GET /base/n/" + std::to_string(i));
    CHECK(response->headers[http::field::content_type] == "text/plain");
  }
  CHECK(client->connections_opened() == 1);

  HttpRequest post = get("/reviews");
  post.method = http::verb::post;
  post.body = R"({"a":1})";
  post.headers = {{"Authorization", "Bearer abc"}};
  auto posted = call(*client, post);
  REQUIRE(posted.has_value());
  CHECK(posted->body == R"(POST /base/reviews auth=Bearer abc body={"a":1})");
  auto missing = call(*client, get("/status/404"));
  REQUIRE(missing.has_value());
  CHECK(missing->status == 404);
  CHECK(client->connections_opened() == 1);
  client->shutdown();
}

TEST_CASE("concurrent requests open connections and keep at most the idle limit", "[http_client]") {
  TestServer server(echo);
  IoThread client_thread;
  auto client = make_client(client_thread.io, server.url(false), {}, 2);
  std::vector<std::future<HttpResult>> futures;
  for (int i = 0; i < 6; ++i) {
    auto promise = std::make_shared<std::promise<HttpResult>>();
    futures.push_back(promise->get_future());
    client->request(get("/c"), [promise](HttpResult r) { promise->set_value(std::move(r)); });
  }
  for (auto& f : futures) {
    REQUIRE(f.wait_for(10s) == std::future_status::ready);
    auto r = f.get();
    REQUIRE(r.has_value());
    CHECK(r->body == "GET /c");
  }
  const size_t opened = client->connections_opened();
  CHECK(opened >= 2);
  // Sequential requests now run on the two kept connections only.
  for (int i = 0; i < 5; ++i)
    REQUIRE(call(*client, get("/again")).has_value());
  CHECK(client->connections_opened() == opened);
}

TEST_CASE("a connection the server closed is replaced without failing the request",
          "[http_client]") {
  IoThread client_thread;
  std::string url;
  std::shared_ptr<HttpClient> client;
  {
    auto server = std::make_unique<TestServer>(echo);
    url = server->url(false);
    client = make_client(client_thread.io, url);
    REQUIRE(call(*client, get("/first")).has_value());
    // A new server on the same port: the pooled connection is dead.
    const unsigned short port = server->port;
    server.reset();
    nodemeter::api::ServerOptions options;
    IoThread server_thread;
    options.listen = {"127.0.0.1:" + std::to_string(port)};
    nodemeter::api::Server again(server_thread.io, options, echo);
    REQUIRE(again.start().has_value());
    auto second = call(*client, get("/second"));
    INFO((second ? std::string() : second.error()));
    REQUIRE(second.has_value());
    CHECK(second->body == "GET /second");
    CHECK(client->connections_opened() == 2);
    server_thread.stop();
  }
}

TEST_CASE("a server that does not answer times out", "[http_client]") {
  IoThread client_thread;
  // Listening but never accepting: the kernel completes the handshake, nobody answers.
  boost::asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  auto client = make_client(client_thread.io, "http://127.0.0.1:" + std::to_string(port));
  const auto start = SteadyClock::now();
  auto response = call(*client, get("/slow", 300ms));
  const auto elapsed = SteadyClock::now() - start;
  REQUIRE_FALSE(response.has_value());
  CHECK(response.error() ==
        "GET http://127.0.0.1:" + std::to_string(port) + "/slow: no answer within 300 ms");
  CHECK(elapsed >= 300ms);
  CHECK(elapsed < 3s);
}

TEST_CASE("a refused connection is an error naming the URL", "[http_client]") {
  IoThread client_thread;
  unsigned short port = 0;
  {
    boost::asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
    port = acceptor.local_endpoint().port();
  }
  auto client = make_client(client_thread.io, "http://127.0.0.1:" + std::to_string(port));
  auto response = call(*client, get("/x"));
  REQUIRE_FALSE(response.has_value());
  CHECK(response.error() ==
        "GET http://127.0.0.1:" + std::to_string(port) + "/x: Connection refused");
}

TEST_CASE("a response larger than 64 MiB is an error", "[http_client]") {
  TestServer server(echo);
  IoThread client_thread;
  auto client = make_client(client_thread.io, server.url(false));
  auto response = call(*client, get("/huge", 20s));
  REQUIRE_FALSE(response.has_value());
  CHECK(response.error() ==
        "GET " + server.url(false) + "/huge: the response is larger than 64 MiB");
}

TEST_CASE("shutdown fails what is in flight and later requests", "[http_client]") {
  IoThread client_thread;
  boost::asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  auto client = make_client(client_thread.io, "http://127.0.0.1:" + std::to_string(port));
  auto promise = std::make_shared<std::promise<HttpResult>>();
  auto future = promise->get_future();
  client->request(get("/pending", 10s), [promise](HttpResult r) { promise->set_value(r); });
  std::this_thread::sleep_for(100ms);
  client->shutdown();
  REQUIRE(future.wait_for(2s) == std::future_status::ready);
  auto pending = future.get();
  REQUIRE_FALSE(pending.has_value());
  CHECK(pending.error().ends_with("/pending: the client was shut down"));
  auto later = call(*client, get("/later"));
  REQUIRE_FALSE(later.has_value());
  CHECK(later.error().ends_with("/later: the client was shut down"));
}

TEST_CASE("TLS verifies the server against the CA and the host name", "[http_client][tls]") {
  const Pki pki = make_pki("tls");
  make_ca(pki.dir, "other");
  TestServer server(echo, server_context(pki, false));

  IoThread client_thread;
  SECTION("the right CA file, by IP address and by name") {
    TlsClientOptions tls;
    tls.ca_file = pki.ca_crt();
    auto by_ip = make_client(client_thread.io, server.url(true), tls);
    auto response = call(*by_ip, get("/tls"));
    INFO((response ? std::string() : response.error()));
    REQUIRE(response.has_value());
    CHECK(response->body == "GET /tls");
    REQUIRE(call(*by_ip, get("/tls2")).has_value());
    CHECK(by_ip->connections_opened() == 1);

    auto by_name = make_client(client_thread.io, server.url(true, "localhost"), tls);
    REQUIRE(call(*by_name, get("/tls")).has_value());
  }
  SECTION("the CA given inline") {
    TlsClientOptions tls;
    tls.ca_pem = read_text(pki.ca_crt());
    auto client = make_client(client_thread.io, server.url(true), tls);
    REQUIRE(call(*client, get("/tls")).has_value());
  }
  SECTION("a wrong CA fails verification") {
    TlsClientOptions tls;
    tls.ca_file = pki.dir / "other.crt";
    auto client = make_client(client_thread.io, server.url(true), tls);
    auto response = call(*client, get("/tls"));
    REQUIRE_FALSE(response.has_value());
    CHECK(response.error() ==
          "GET " + server.url(true) +
              "/tls: TLS certificate verification failed: unable to get local issuer certificate");
  }
  SECTION("a name the certificate does not carry fails verification") {
    TlsClientOptions tls;
    tls.ca_file = pki.ca_crt();
    tls.server_name = "kubernetes.default.svc";
    auto client = make_client(client_thread.io, server.url(true), tls);
    auto response = call(*client, get("/tls"));
    REQUIRE_FALSE(response.has_value());
    CHECK(response.error().ends_with("TLS certificate verification failed: hostname mismatch"));
  }
  SECTION("an IP address the certificate does not carry fails verification") {
    TlsClientOptions tls;
    tls.ca_file = pki.ca_crt();
    tls.server_name = "127.0.0.2";
    auto client = make_client(client_thread.io, server.url(true), tls);
    auto response = call(*client, get("/tls"));
    REQUIRE_FALSE(response.has_value());
    CHECK(response.error().ends_with("TLS certificate verification failed: IP address mismatch"));
  }
  SECTION("insecure skips verification") {
    TlsClientOptions tls;
    tls.ca_file = pki.dir / "other.crt";
    tls.insecure_skip_verify = true;
    tls.server_name = "elsewhere.example";
    auto client = make_client(client_thread.io, server.url(true), tls);
    REQUIRE(call(*client, get("/tls")).has_value());
  }
}

TEST_CASE("a client certificate is presented to a server that requires one", "[http_client][tls]") {
  const Pki pki = make_pki("mtls");
  TestServer server(echo, server_context(pki, true));
  IoThread client_thread;

  TlsClientOptions without;
  without.ca_file = pki.ca_crt();
  auto refused = call(*make_client(client_thread.io, server.url(true), without), get("/m"));
  REQUIRE_FALSE(refused.has_value());

  TlsClientOptions files = without;
  files.client_cert_file = pki.client_crt();
  files.client_key_file = pki.client_key();
  auto by_files = call(*make_client(client_thread.io, server.url(true), files), get("/m"));
  INFO((by_files ? std::string() : by_files.error()));
  REQUIRE(by_files.has_value());
  CHECK(by_files->body == "GET /m");

  TlsClientOptions inline_pem = without;
  inline_pem.client_cert_pem = read_text(pki.client_crt());
  inline_pem.client_key_pem = read_text(pki.client_key());
  REQUIRE(
      call(*make_client(client_thread.io, server.url(true), inline_pem), get("/m")).has_value());
}

TEST_CASE("TLS options that cannot be loaded are errors at creation", "[http_client][tls]") {
  const Pki pki = make_pki("badtls");
  boost::asio::io_context io;
  TlsClientOptions missing;
  missing.ca_file = (pki.dir / "nope.crt").string();
  CHECK(HttpClient::create(io, "https://h", missing).error() ==
        "the CA file " + missing.ca_file + " does not exist");

  TlsClientOptions garbage;
  write_file(pki.dir / "garbage.crt", "not a certificate\n");
  garbage.ca_file = (pki.dir / "garbage.crt").string();
  auto bad = HttpClient::create(io, "https://h", garbage);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().starts_with("cannot load the CA file " + garbage.ca_file + ": "));

  TlsClientOptions half;
  half.client_cert_file = pki.client_crt();
  CHECK(HttpClient::create(io, "https://h", half).error() ==
        "a client certificate needs both the certificate and its key");

  TlsClientOptions mismatched;
  mismatched.client_cert_file = pki.client_crt();
  mismatched.client_key_file = pki.server_key();
  auto mismatch = HttpClient::create(io, "https://h", mismatched);
  REQUIRE_FALSE(mismatch.has_value());
  CHECK(mismatch.error().starts_with("cannot load the client key " + pki.server_key().string()));
  CHECK_THAT(mismatch.error(), Catch::Contains("key values mismatch"));

  CHECK(HttpClient::create(io, "gopher://h", {}).error() ==
        "URL \"gopher://h\" must start with https:// or http://");
  // Plain HTTP ignores TLS options.
  CHECK(HttpClient::create(io, "http://h", missing).has_value());
}

TEST_CASE("stream delivers the head and each line of the body", "[http_client]") {
  TestServer server(echo);
  IoThread client_thread;
  auto client = make_client(client_thread.io, server.url(false));
  std::mutex mu;
  unsigned status = 0;
  std::vector<std::string> lines;
  std::promise<std::string> done;
  StreamCallbacks callbacks;
  callbacks.on_head = [&](unsigned s, const http::fields&) {
    std::lock_guard lock(mu);
    status = s;
  };
  callbacks.on_line = [&](std::string_view line) {
    std::lock_guard lock(mu);
    lines.emplace_back(line);
  };
  callbacks.on_done = [&](const std::string& error) { done.set_value(error); };
  auto handle = client->stream(get("/lines"), callbacks);
  auto future = done.get_future();
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  CHECK(future.get().empty());
  std::lock_guard lock(mu);
  CHECK(status == 200);
  CHECK(lines == std::vector<std::string>{"one", "two", "", "three"});
  handle->cancel();  // after the end: nothing happens
}

TEST_CASE("a silent stream times out and a cancelled one says so", "[http_client]") {
  IoThread client_thread;
  boost::asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acceptor.local_endpoint().port();
  auto client = make_client(client_thread.io, "http://127.0.0.1:" + std::to_string(port));

  std::promise<std::string> timed_out;
  StreamCallbacks callbacks;
  callbacks.on_done = [&](const std::string& error) { timed_out.set_value(error); };
  auto handle = client->stream(get("/watch", 300ms), callbacks);
  auto future = timed_out.get_future();
  REQUIRE(future.wait_for(5s) == std::future_status::ready);
  CHECK(future.get() ==
        "GET http://127.0.0.1:" + std::to_string(port) + "/watch: no answer within 300 ms");

  std::promise<std::string> cancelled;
  StreamCallbacks second;
  second.on_done = [&](const std::string& error) { cancelled.set_value(error); };
  auto cancel_me = client->stream(get("/watch", 10s), second);
  std::this_thread::sleep_for(50ms);
  cancel_me->cancel();
  cancel_me->cancel();
  auto cancelled_future = cancelled.get_future();
  REQUIRE(cancelled_future.wait_for(5s) == std::future_status::ready);
  CHECK(cancelled_future.get() == "cancelled");
}
