#include "kube/http_client.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <charconv>
#include <filesystem>
#include <map>
#include <optional>

namespace nodemeter::kube {

boost::system::result<BaseUrl, std::string> parse_base_url(std::string_view url) {
  const std::string quoted = "\"" + std::string(url) + "\"";
  BaseUrl out;
  std::string_view rest = url;
  if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    out.tls = false;
    rest.remove_prefix(7);
  } else {
    return "URL " + quoted + " must start with https:// or http://";
  }
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view prefix = rest.substr(slash);
    while (prefix.ends_with('/'))
      prefix.remove_suffix(1);
    out.path_prefix = prefix;
  }
  std::string_view port;
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return "URL " + quoted + " has an unclosed IPv6 bracket";
    out.host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return "URL " + quoted + " has text after the IPv6 address";
      port = after.substr(1);
    }
  } else {
    const size_t colon = authority.rfind(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) return "URL " + quoted + " has no host";
  if (port.empty()) {
    out.port = out.tls ? "443" : "80";
  } else {
    for (char c : port) {
      if (c < '0' || c > '9') return "URL " + quoted + " has a port that is not a number";
    }
    unsigned number = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (ec != std::errc() || end != port.data() + port.size() || number > 65535) {
      return "URL " + quoted + " has a port above 65535";
    }
    out.port = port;
  }
  return out;
}

namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Strand = net::strand<net::io_context::executor_type>;
using SteadyClock = std::chrono::steady_clock;

// A response bigger than this is an error rather than memory the caller did not plan for; a pod
// list of a large cluster stays well below it when paged.
constexpr uint64_t kMaxResponseBytes = 64ull << 20;
constexpr uint32_t kMaxHeaderBytes = 64 * 1024;
// A line of a streamed body (one watch event) longer than this ends the stream.
constexpr size_t kMaxLineBytes = 64u << 20;
// Idle connections older than this are closed instead of reused (Go's IdleConnTimeout); servers
// close theirs after a similar time, and a request on a closed one costs a retry.
constexpr std::chrono::seconds kMaxIdleAge{90};
constexpr size_t kStreamReadBytes = 16 * 1024;

bool is_ip_address(const std::string& host) {
  boost::system::error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

std::string ssl_error_text(const boost::system::error_code& ec) {
  std::string text = ec.message();
  if (ec.category() == net::error::get_ssl_category()) {
    char buffer[256];
    ERR_error_string_n(static_cast<unsigned long>(ec.value()), buffer, sizeof buffer);
    text = buffer;
  }
  return text;
}

// One TCP or TLS connection to the base URL.
class Connection {
 public:
  Connection(const Strand& strand, ssl::context* tls) : resolver(strand) {
    if (tls != nullptr) {
      ssl_.emplace(strand, *tls);
    } else {
      tcp_.emplace(strand);
    }
  }

  beast::tcp_stream& lowest() { return ssl_ ? beast::get_lowest_layer(*ssl_) : *tcp_; }
  beast::ssl_stream<beast::tcp_stream>* tls() { return ssl_ ? &*ssl_ : nullptr; }
  // Calls f with the stream to read and write: the TLS stream or the TCP stream.
  template <class F>
  void with_stream(F&& f) {
    if (ssl_) {
      f(*ssl_);
    } else {
      f(*tcp_);
    }
  }
  // Ends whatever is pending on it; its handlers complete with errors.
  void close() {
    resolver.cancel();
    boost::system::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().socket().close(ec);
  }

  tcp::resolver resolver;
  beast::flat_buffer buffer;
  SteadyClock::time_point idle_since;
  bool reused = false;

 private:
  std::optional<beast::tcp_stream> tcp_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> ssl_;
};

// An exchange in flight that shutdown() ends.
class Abortable {
 public:
  virtual ~Abortable() = default;
  virtual void abort(const std::string& why) = 0;
};

class ClientImpl;

// One request and its response on a pooled or new connection.
class RequestExchange final : public Abortable,
                              public std::enable_shared_from_this<RequestExchange> {
 public:
  RequestExchange(std::shared_ptr<ClientImpl> client, HttpRequest request,
                  std::function<void(HttpResult)> done);
  void start();
  void abort(const std::string& why) override { fail(why); }

 private:
  void connect_new();
  void write();
  void read();
  // A pooled connection the server closed meanwhile fails before any byte of a response: the
  // request goes once more on a new connection.
  void transport_error(const boost::system::error_code& ec, const char* during);
  void succeed();
  void fail(const std::string& what);
  void finish(HttpResult result);

  std::shared_ptr<ClientImpl> client_;
  HttpRequest request_;
  std::function<void(HttpResult)> done_;
  http::request<http::string_body> message_;
  std::optional<http::response_parser<http::string_body>> parser_;
  std::shared_ptr<Connection> connection_;
  net::steady_timer timer_;
  uint64_t id_ = 0;
  bool retried_ = false;
  bool finished_ = false;
};

// A response read line by line on its own connection.
class StreamExchange final : public Abortable, public std::enable_shared_from_this<StreamExchange> {
 public:
  StreamExchange(std::shared_ptr<ClientImpl> client, HttpRequest request,
                 StreamCallbacks callbacks);
  void start();
  void abort(const std::string& why) override { fail(why); }

 private:
  void arm_timer();
  void read_body();
  void on_body(boost::system::error_code ec);
  void fail(const std::string& what);
  void finish(const std::string& error);

  std::shared_ptr<ClientImpl> client_;
  HttpRequest request_;
  StreamCallbacks callbacks_;
  http::request<http::string_body> message_;
  http::response_parser<http::buffer_body> parser_;
  std::shared_ptr<Connection> connection_;
  net::steady_timer timer_;
  std::string line_;
  char chunk_[kStreamReadBytes];
  uint64_t id_ = 0;
  bool finished_ = false;
};

class StreamHandleImpl final : public StreamHandle {
 public:
  StreamHandleImpl(Strand strand, std::weak_ptr<StreamExchange> exchange)
      : strand_(std::move(strand)), exchange_(std::move(exchange)) {}
  void cancel() override {
    net::dispatch(strand_, [exchange = exchange_] {
      if (auto e = exchange.lock()) e->abort("cancelled");
    });
  }

 private:
  Strand strand_;
  std::weak_ptr<StreamExchange> exchange_;
};

class ClientImpl final : public HttpClient, public std::enable_shared_from_this<ClientImpl> {
 public:
  ClientImpl(net::io_context& io, BaseUrl url, std::shared_ptr<ssl::context> tls,
             std::string server_name, bool verify, size_t max_idle)
      : strand_(net::make_strand(io)),
        url_(std::move(url)),
        tls_(std::move(tls)),
        server_name_(std::move(server_name)),
        verify_(verify),
        max_idle_(max_idle) {
    const bool v6 = url_.host.find(':') != std::string::npos;
    const std::string host = v6 ? "[" + url_.host + "]" : url_.host;
    const bool default_port = url_.port == (url_.tls ? "443" : "80");
    host_header_ = default_port ? host : host + ":" + url_.port;
    origin_ = std::string(url_.tls ? "https://" : "http://") + host + ":" + url_.port;
  }
  ~ClientImpl() override {
    for (auto& c : idle_)
      c->close();
  }

  void request(HttpRequest request, std::function<void(HttpResult)> done) override {
    auto exchange =
        std::make_shared<RequestExchange>(shared_from_this(), std::move(request), std::move(done));
    net::post(strand_, [exchange] { exchange->start(); });
  }

  std::shared_ptr<StreamHandle> stream(HttpRequest request, StreamCallbacks callbacks) override {
    auto exchange = std::make_shared<StreamExchange>(shared_from_this(), std::move(request),
                                                     std::move(callbacks));
    net::post(strand_, [exchange] { exchange->start(); });
    return std::make_shared<StreamHandleImpl>(strand_, exchange);
  }

  void shutdown() override {
    net::dispatch(strand_, [self = shared_from_this()] {
      self->shut_down_ = true;
      for (auto& c : self->idle_)
        c->close();
      self->idle_.clear();
      auto active = std::move(self->active_);
      self->active_.clear();
      for (auto& [id, weak] : active) {
        if (auto a = weak.lock()) a->abort("the client was shut down");
      }
    });
  }

  size_t connections_opened() const override { return opened_.load(); }

  // The rest runs on the strand.
  const Strand& strand() const { return strand_; }
  bool shut_down() const { return shut_down_; }

  uint64_t track(std::weak_ptr<Abortable> exchange) {
    const uint64_t id = ++next_id_;
    active_.emplace(id, std::move(exchange));
    return id;
  }
  void untrack(uint64_t id) { active_.erase(id); }

  std::string describe(const HttpRequest& request) const {
    return std::string(http::to_string(request.method)) + " " + origin_ + url_.path_prefix +
           request.target;
  }

  http::request<http::string_body> message(const HttpRequest& request) const {
    http::request<http::string_body> m{request.method, url_.path_prefix + request.target, 11};
    m.set(http::field::host, host_header_);
    m.set(http::field::user_agent, "nodemeter");
    bool content_type = false;
    for (const auto& [name, value] : request.headers) {
      m.insert(name, value);
      if (beast::iequals(name, "content-type")) content_type = true;
    }
    if (!request.body.empty()) {
      if (!content_type) m.set(http::field::content_type, "application/json");
      m.body() = request.body;
      m.prepare_payload();
    }
    return m;
  }

  std::shared_ptr<Connection> take_idle() {
    const auto now = SteadyClock::now();
    while (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      if (now - c->idle_since > kMaxIdleAge || !c->lowest().socket().is_open()) {
        c->close();
        continue;
      }
      c->reused = true;
      return c;
    }
    return nullptr;
  }

  void give_back(std::shared_ptr<Connection> c) {
    if (shut_down_ || idle_.size() >= max_idle_ || c->buffer.size() != 0) {
      c->close();
      return;
    }
    c->idle_since = SteadyClock::now();
    idle_.push_back(std::move(c));
  }

  std::shared_ptr<Connection> new_connection() {
    return std::make_shared<Connection>(strand_, tls_.get());
  }

  // Resolves, connects and shakes hands; done gets an empty string or what failed.
  void open(std::shared_ptr<Connection> c, std::function<void(std::string)> done) {
    c->resolver.async_resolve(
        url_.host, url_.port,
        [self = shared_from_this(), c, done = std::move(done)](
            boost::system::error_code ec, tcp::resolver::results_type results) mutable {
          if (ec) return done("cannot resolve " + self->url_.host + ": " + ec.message());
          c->lowest().async_connect(
              results, [self, c, done = std::move(done)](boost::system::error_code ec,
                                                         const tcp::endpoint&) mutable {
                if (ec) return done(ec.message());
                ++self->opened_;
                boost::system::error_code ignored;
                c->lowest().socket().set_option(tcp::no_delay(true), ignored);
                if (c->tls() == nullptr) return done("");
                self->handshake(c, std::move(done));
              });
        });
  }

 private:
  void handshake(const std::shared_ptr<Connection>& c, std::function<void(std::string)> done) {
    SSL* ssl = c->tls()->native_handle();
    const bool ip = is_ip_address(server_name_);
    // SNI carries DNS names only (RFC 6066).
    if (!ip) SSL_set_tlsext_host_name(ssl, server_name_.c_str());
    if (verify_) {
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      const int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, server_name_.c_str())
                        : X509_VERIFY_PARAM_set1_host(param, server_name_.c_str(), 0);
      if (ok != 1) return done("cannot verify against the server name \"" + server_name_ + "\"");
    }
    c->tls()->async_handshake(
        ssl::stream_base::client,
        [self = shared_from_this(), c, done = std::move(done)](boost::system::error_code ec) {
          if (!ec) return done("");
          const long verify = SSL_get_verify_result(c->tls()->native_handle());
          if (self->verify_ && verify != X509_V_OK) {
            return done("TLS certificate verification failed: " +
                        std::string(X509_verify_cert_error_string(verify)));
          }
          done("TLS handshake failed: " + ssl_error_text(ec));
        });
  }

  Strand strand_;
  BaseUrl url_;
  std::shared_ptr<ssl::context> tls_;
  std::string server_name_;
  bool verify_;
  size_t max_idle_;
  std::string host_header_;
  std::string origin_;
  std::vector<std::shared_ptr<Connection>> idle_;
  std::map<uint64_t, std::weak_ptr<Abortable>> active_;
  uint64_t next_id_ = 0;
  bool shut_down_ = false;
  std::atomic<size_t> opened_{0};
};

std::string timeout_text(std::chrono::milliseconds timeout) {
  return "no answer within " + std::to_string(timeout.count()) + " ms";
}

RequestExchange::RequestExchange(std::shared_ptr<ClientImpl> client, HttpRequest request,
                                 std::function<void(HttpResult)> done)
    : client_(std::move(client)),
      request_(std::move(request)),
      done_(std::move(done)),
      timer_(client_->strand()) {}

void RequestExchange::start() {
  if (client_->shut_down()) return fail("the client was shut down");
  id_ = client_->track(weak_from_this());
  message_ = client_->message(request_);
  timer_.expires_after(request_.timeout);
  timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->fail(timeout_text(self->request_.timeout));
  });
  connection_ = client_->take_idle();
  if (connection_) return write();
  connect_new();
}

void RequestExchange::connect_new() {
  connection_ = client_->new_connection();
  client_->open(connection_, [self = shared_from_this()](std::string error) {
    if (self->finished_) return;
    if (!error.empty()) return self->fail(error);
    self->write();
  });
}

void RequestExchange::write() {
  connection_->with_stream([&](auto& stream) {
    http::async_write(stream, message_,
                      [self = shared_from_this()](boost::system::error_code ec, size_t) {
                        if (self->finished_) return;
                        if (ec) return self->transport_error(ec, "sending the request");
                        self->read();
                      });
  });
}

void RequestExchange::read() {
  parser_.emplace();
  parser_->body_limit(kMaxResponseBytes);
  parser_->header_limit(kMaxHeaderBytes);
  connection_->with_stream([&](auto& stream) {
    http::async_read(stream, connection_->buffer, *parser_,
                     [self = shared_from_this()](boost::system::error_code ec, size_t) {
                       if (self->finished_) return;
                       if (ec == http::error::body_limit) {
                         return self->fail("the response is larger than " +
                                           std::to_string(kMaxResponseBytes >> 20) + " MiB");
                       }
                       if (ec) return self->transport_error(ec, "reading the response");
                       self->succeed();
                     });
  });
}

void RequestExchange::transport_error(const boost::system::error_code& ec, const char* during) {
  const bool nothing_read = !parser_ || !parser_->got_some();
  if (connection_->reused && !retried_ && nothing_read) {
    retried_ = true;
    connection_->close();
    return connect_new();
  }
  fail(std::string(during) + ": " + ssl_error_text(ec));
}

void RequestExchange::succeed() {
  auto& message = parser_->get();
  HttpResponse response;
  response.status = message.result_int();
  response.headers = message.base();
  response.body = std::move(message.body());
  const bool keep_alive = message.keep_alive();
  auto connection = std::move(connection_);
  finish(std::move(response));
  if (keep_alive) {
    client_->give_back(std::move(connection));
  } else {
    connection->close();
  }
}

void RequestExchange::fail(const std::string& what) {
  if (finished_) return;
  if (connection_) connection_->close();
  finish(client_->describe(request_) + ": " + what);
}

void RequestExchange::finish(HttpResult result) {
  if (finished_) return;
  finished_ = true;
  timer_.cancel();
  if (id_ != 0) client_->untrack(id_);
  if (done_) done_(std::move(result));
}

StreamExchange::StreamExchange(std::shared_ptr<ClientImpl> client, HttpRequest request,
                               StreamCallbacks callbacks)
    : client_(std::move(client)),
      request_(std::move(request)),
      callbacks_(std::move(callbacks)),
      timer_(client_->strand()) {
  parser_.body_limit(boost::none);
  parser_.header_limit(kMaxHeaderBytes);
}

void StreamExchange::start() {
  if (client_->shut_down()) return fail("the client was shut down");
  id_ = client_->track(weak_from_this());
  message_ = client_->message(request_);
  arm_timer();
  connection_ = client_->new_connection();
  client_->open(connection_, [self = shared_from_this()](std::string error) {
    if (self->finished_) return;
    if (!error.empty()) return self->fail(error);
    self->connection_->with_stream([&](auto& stream) {
      http::async_write(stream, self->message_, [self](boost::system::error_code ec, size_t) {
        if (self->finished_) return;
        if (ec) return self->fail("sending the request: " + ssl_error_text(ec));
        self->connection_->with_stream([&](auto& stream) {
          http::async_read_header(
              stream, self->connection_->buffer, self->parser_,
              [self](boost::system::error_code ec, size_t) {
                if (self->finished_) return;
                if (ec) return self->fail("reading the response: " + ssl_error_text(ec));
                self->arm_timer();
                if (self->callbacks_.on_head) {
                  self->callbacks_.on_head(self->parser_.get().result_int(),
                                           self->parser_.get().base());
                }
                if (self->finished_) return;
                if (self->parser_.is_done()) return self->finish("");
                self->read_body();
              });
        });
      });
    });
  });
}

// Each wait ends the previous one, so the timer measures silence since the last bytes.
void StreamExchange::arm_timer() {
  timer_.expires_after(request_.timeout);
  timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
    if (!ec) self->fail(timeout_text(self->request_.timeout));
  });
}

void StreamExchange::read_body() {
  parser_.get().body().data = chunk_;
  parser_.get().body().size = sizeof chunk_;
  connection_->with_stream([&](auto& stream) {
    http::async_read_some(
        stream, connection_->buffer, parser_,
        [self = shared_from_this()](boost::system::error_code ec, size_t) { self->on_body(ec); });
  });
}

void StreamExchange::on_body(boost::system::error_code ec) {
  if (finished_) return;
  if (ec == http::error::need_buffer) ec = {};
  if (ec) return fail("reading the response: " + ssl_error_text(ec));
  arm_timer();
  const size_t got = sizeof chunk_ - parser_.get().body().size;
  std::string_view data(chunk_, got);
  while (!data.empty()) {
    const size_t newline = data.find('\n');
    if (newline == std::string_view::npos) {
      line_.append(data);
      break;
    }
    line_.append(data.substr(0, newline));
    data.remove_prefix(newline + 1);
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (callbacks_.on_line) callbacks_.on_line(line_);
    line_.clear();
    if (finished_) return;
  }
  if (line_.size() > kMaxLineBytes) {
    return fail("a line of the response is longer than " + std::to_string(kMaxLineBytes >> 20) +
                " MiB");
  }
  if (parser_.is_done()) {
    if (!line_.empty() && callbacks_.on_line) callbacks_.on_line(line_);
    line_.clear();
    return finish("");
  }
  read_body();
}

void StreamExchange::fail(const std::string& what) {
  if (finished_) return;
  if (connection_) connection_->close();
  finish(what == "cancelled" ? what : client_->describe(request_) + ": " + what);
}

void StreamExchange::finish(const std::string& error) {
  if (finished_) return;
  finished_ = true;
  timer_.cancel();
  if (connection_) connection_->close();
  if (id_ != 0) client_->untrack(id_);
  if (callbacks_.on_done) callbacks_.on_done(error);
}

std::string read_error(const std::string& what, const std::string& path,
                       const boost::system::error_code& ec) {
  return "cannot load the " + what + " " + path + ": " + ssl_error_text(ec);
}

boost::system::result<std::shared_ptr<ssl::context>, std::string> make_tls_context(
    const TlsClientOptions& tls) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(context->native_handle(), TLS1_2_VERSION);
  boost::system::error_code ec;
  auto missing = [](const std::string& file) { return !std::filesystem::exists(file); };
  if (tls.insecure_skip_verify) {
    context->set_verify_mode(ssl::verify_none);
  } else {
    context->set_verify_mode(ssl::verify_peer);
    if (!tls.ca_file.empty()) {
      if (missing(tls.ca_file)) return "the CA file " + tls.ca_file + " does not exist";
      context->load_verify_file(tls.ca_file, ec);
      if (ec) return read_error("CA file", tls.ca_file, ec);
    }
    if (!tls.ca_pem.empty()) {
      context->add_certificate_authority(net::buffer(tls.ca_pem), ec);
      if (ec) return "cannot load the CA certificates given inline: " + ssl_error_text(ec);
    }
    if (tls.ca_file.empty() && tls.ca_pem.empty()) {
      context->set_default_verify_paths(ec);
      if (ec) return "cannot load the system's CA certificates: " + ssl_error_text(ec);
    }
  }
  const bool cert = !tls.client_cert_file.empty() || !tls.client_cert_pem.empty();
  const bool key = !tls.client_key_file.empty() || !tls.client_key_pem.empty();
  if (cert != key) return "a client certificate needs both the certificate and its key";
  if (!tls.client_cert_file.empty()) {
    if (missing(tls.client_cert_file)) {
      return "the client certificate file " + tls.client_cert_file + " does not exist";
    }
    context->use_certificate_chain_file(tls.client_cert_file, ec);
    if (ec) return read_error("client certificate", tls.client_cert_file, ec);
  } else if (!tls.client_cert_pem.empty()) {
    context->use_certificate_chain(net::buffer(tls.client_cert_pem), ec);
    if (ec) return "cannot load the client certificate given inline: " + ssl_error_text(ec);
  }
  if (!tls.client_key_file.empty()) {
    if (missing(tls.client_key_file)) {
      return "the client key file " + tls.client_key_file + " does not exist";
    }
    context->use_private_key_file(tls.client_key_file, ssl::context::pem, ec);
    if (ec) return read_error("client key", tls.client_key_file, ec);
  } else if (!tls.client_key_pem.empty()) {
    context->use_private_key(net::buffer(tls.client_key_pem), ssl::context::pem, ec);
    if (ec) return "cannot load the client key given inline: " + ssl_error_text(ec);
  }
  if (cert && SSL_CTX_check_private_key(context->native_handle()) != 1) {
    return std::string("the client key does not match the client certificate");
  }
  return context;
}

}  // namespace

boost::system::result<std::shared_ptr<HttpClient>, std::string> HttpClient::create(
    boost::asio::io_context& io, std::string_view base_url, const TlsClientOptions& tls,
    size_t max_idle_connections) {
  auto url = parse_base_url(base_url);
  if (!url) return url.error();
  std::shared_ptr<ssl::context> context;
  if (url->tls) {
    auto made = make_tls_context(tls);
    if (!made) return made.error();
    context = std::move(*made);
  }
  std::string server_name = tls.server_name.empty() ? url->host : tls.server_name;
  const bool verify = url->tls && !tls.insecure_skip_verify;
  return std::shared_ptr<HttpClient>(
      std::make_shared<ClientImpl>(io, std::move(*url), std::move(context), std::move(server_name),
                                   verify, max_idle_connections));
}

}  // namespace nodemeter::kube
