#include "api/server.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/intrusive/list.hpp>
#include <charconv>
#include <cstdint>
#include <ctime>
#include <exception>
#include <limits>
#include <optional>

#include "api/gzip.h"

namespace nodemeter::api {

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bi = boost::intrusive;
using tcp = net::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using Hook = bi::list_member_hook<bi::link_mode<bi::safe_link>>;
using RequestParser = http::request_parser<http::string_body>;

// An idle connection reads into this much buffer; a request that needed more gives it back
// afterwards, so an idle keep-alive connection costs little more than its socket.
constexpr size_t kIdleReadBytes = 512;
constexpr size_t kKeptBufferBytes = 4096;
// After the last response of a connection the server stops sending and drains what the client
// still sends for at most this long, so the response is not lost to a reset.
constexpr std::chrono::milliseconds kLingerTimeout{2000};
// Accepting failed for lack of descriptors or memory: try again after this pause.
constexpr std::chrono::milliseconds kAcceptRetry{50};
// Descriptors beyond the connections: listeners, cgroup files kept open, logs.
constexpr rlim_t kSpareDescriptors = 64;

std::string lowercase_first(std::string s) {
  if (!s.empty() && s[0] >= 'A' && s[0] <= 'Z') s[0] = static_cast<char>(s[0] - 'A' + 'a');
  return s;
}

std::string_view path_of(std::string_view target) {
  return target.substr(0, target.find('?'));
}

// The Date header, formatted once per second.
class DateHeader {
 public:
  std::string_view now() {
    std::time_t t = std::time(nullptr);
    if (t != second_) {
      std::tm tm{};
      gmtime_r(&t, &tm);
      length_ = std::strftime(text_, sizeof text_, "%a, %d %b %Y %H:%M:%S GMT", &tm);
      second_ = t;
    }
    return {text_, length_};
  }

 private:
  std::time_t second_ = -1;
  char text_[40] = {};
  size_t length_ = 0;
};

// What the server keeps of a connection: list links, and how to end it.
struct SessionBase {
  Hook all_hook;   // every open connection
  Hook idle_hook;  // connections without a request in progress, least recently active first
  virtual ~SessionBase() = default;
  // Closes the socket now; pending operations finish with an error and free the session.
  virtual void close_now() = 0;
};

using SessionList =
    bi::list<SessionBase, bi::member_hook<SessionBase, Hook, &SessionBase::all_hook>>;
using IdleList = bi::list<SessionBase, bi::member_hook<SessionBase, Hook, &SessionBase::idle_hook>>;

struct Listener {
  explicit Listener(net::io_context& io) : acceptor(io), retry(io) {}
  tcp::acceptor acceptor;
  net::steady_timer retry;
};

// Everything but the sessions themselves. Lives as long as any session or pending operation.
class Core : public std::enable_shared_from_this<Core> {
 public:
  Core(net::io_context& io, ServerOptions options, Handler handler, AsyncHandler async_handler,
       ResponseObserver observer)
      : io_(io),
        options_(std::move(options)),
        handler_(std::move(handler)),
        async_handler_(std::move(async_handler)),
        observer_(std::move(observer)),
        grace_timer_(io) {}

  boost::system::result<void, std::string> start();
  std::vector<tcp::endpoint> local_endpoints() const { return endpoints_; }
  size_t connection_count() const { return count_.load(std::memory_order_relaxed); }
  void shutdown(std::chrono::milliseconds grace, std::function<void()> done);
  void abort();

  net::io_context& io() { return io_; }

  // Called by sessions, on the io thread.
  const ServerOptions& options() const { return options_; }
  bool closing() const { return closing_; }
  Response handle(const Request& request);
  bool is_async() const { return static_cast<bool>(async_handler_); }
  const AsyncHandler& async_handler() const { return async_handler_; }
  void observe(std::string_view path, unsigned status, std::chrono::nanoseconds elapsed) {
    if (observer_) observer_(path, status, elapsed);
  }
  void adopt(SessionBase& session) {
    sessions_.push_back(session);
    count_.store(sessions_.size(), std::memory_order_relaxed);
  }
  void mark_idle(SessionBase& session) {
    unlink_idle(session);
    idle_.push_back(session);
  }
  // A connection that only waits for its client to go away: the first to close under pressure.
  void mark_lingering(SessionBase& session) {
    unlink_idle(session);
    idle_.push_front(session);
  }
  void mark_busy(SessionBase& session) { unlink_idle(session); }
  void forget(SessionBase& session) {
    unlink_idle(session);
    if (session.all_hook.is_linked()) sessions_.erase(sessions_.iterator_to(session));
    count_.store(sessions_.size(), std::memory_order_relaxed);
    if (closing_ && sessions_.empty()) finish_shutdown();
  }
  // A session being destroyed without having closed (the io_context went away first).
  void drop(SessionBase& session) {
    unlink_idle(session);
    if (session.all_hook.is_linked()) sessions_.erase(sessions_.iterator_to(session));
    count_.store(sessions_.size(), std::memory_order_relaxed);
  }
  std::string_view date() { return date_.now(); }

 private:
  void unlink_idle(SessionBase& session) {
    if (session.idle_hook.is_linked()) idle_.erase(idle_.iterator_to(session));
  }
  boost::system::result<void, std::string> listen_on(const std::string& value);
  boost::system::result<void, std::string> adopt_listener(int fd);
  void accept(Listener& listener);
  void on_accept(Listener& listener, beast::error_code ec, tcp::socket socket);
  void admit(tcp::socket socket);
  void close_listeners();
  void finish_shutdown();

  net::io_context& io_;
  ServerOptions options_;
  Handler handler_;
  AsyncHandler async_handler_;  // set instead of handler_ for the asynchronous form
  ResponseObserver observer_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<tcp::endpoint> endpoints_;
  SessionList sessions_;
  IdleList idle_;
  std::atomic<size_t> count_{0};
  bool started_ = false;
  bool closing_ = false;
  bool finished_ = false;
  std::function<void()> done_;
  net::steady_timer grace_timer_;
  DateHeader date_;
};

bool is_parse_error(const beast::error_code& ec) {
  static const auto& category = http::make_error_code(http::error::bad_target).category();
  return ec.category() == category && ec != http::error::end_of_stream &&
         ec != http::error::partial_message && ec != http::error::need_more &&
         ec != http::error::buffer_overflow;
}

Response text_response(http::status status, std::string_view body) {
  Response response{status, 11};
  response.set(http::field::content_type, "text/plain; charset=utf-8");
  response.body() = body;
  return response;
}

bool has_token(const Response& response, http::field field, std::string_view token) {
  auto [it, end] = response.equal_range(field);
  for (; it != end; ++it) {
    if (http::token_list(it->value()).exists(token)) return true;
  }
  return false;
}

bool status_has_body(unsigned status) {
  return status >= 200 && status != 204 && status != 304;
}

// Compresses the body when the client accepts gzip and it is worth it.
void maybe_gzip(const Request& request, Response& response, size_t min_bytes) {
  if (response.body().size() < min_bytes || response.count(http::field::content_encoding) != 0 ||
      !status_has_body(response.result_int())) {
    return;
  }
  // The body now depends on Accept-Encoding whichever way this goes: tell caches.
  auto vary = response.find(http::field::vary);
  if (vary == response.end()) {
    response.set(http::field::vary, "Accept-Encoding");
  } else if (!has_token(response, http::field::vary, "accept-encoding") &&
             !has_token(response, http::field::vary, "*")) {
    response.set(http::field::vary, std::string(vary->value()) + ", Accept-Encoding");
  }
  std::string accept;
  auto [it, end] = request.equal_range(http::field::accept_encoding);
  for (; it != end; ++it) {
    if (!accept.empty()) accept += ", ";
    accept += it->value();
  }
  if (!accepts_gzip(accept)) return;
  response.body() = gzip_compress(response.body(), 1);
  response.set(http::field::content_encoding, "gzip");
}

std::string utf8(const ASN1_STRING* value) {
  unsigned char* out = nullptr;
  const int length = ASN1_STRING_to_UTF8(&out, value);
  if (length < 0) return {};
  std::string text(reinterpret_cast<const char*>(out), static_cast<size_t>(length));
  OPENSSL_free(out);
  return text;
}

// The client's certificate, if it sent one: subject CN and O, and whether its chain verified
// against the context's client CAs (the context asks for it without requiring it, and lets a
// failed verification through so that this can say so).
std::optional<ClientCertificate> client_certificate(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return std::nullopt;
  ClientCertificate out;
  const X509_NAME* subject = X509_get_subject_name(cert);
  for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) {
    out.common_name = utf8(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i)));
  }
  for (int i = X509_NAME_get_index_by_NID(subject, NID_organizationName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(subject, NID_organizationName, i)) {
    out.organizations.push_back(utf8(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i))));
  }
  out.verified =
      (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) != 0 && SSL_get_verify_result(ssl) == X509_V_OK;
  return out;
}

// One connection. Requests are answered strictly in order: a pipelined burst waits in the buffer
// while the response before it is written.
template <class Stream>
class Session final : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

 public:
  template <class... Args>
  Session(std::shared_ptr<Core> core, Args&&... stream_args)
      : core_(std::move(core)), stream_(std::forward<Args>(stream_args)...) {
    core_->adopt(*this);
  }
  ~Session() override { core_->drop(*this); }

  void start() {
    if (core_->is_async()) {
      beast::error_code ec;
      peer_.address = lowest().socket().remote_endpoint(ec).address();
      peer_.tls = kTls;
    }
    if constexpr (kTls) {
      state_ = State::handshake;
      // A client that never finishes its handshake is as idle as one that never sends a request.
      core_->mark_idle(*this);
      lowest().expires_after(options().header_timeout);
      stream_.async_handshake(net::ssl::stream_base::server,
                              beast::bind_front_handler(&Session::on_handshake, self()));
    } else {
      wait_for_request();
    }
  }

  void close_now() override {
    if (state_ == State::closed) return;
    state_ = State::closed;
    lowest().close();
    if (reply_timer_) reply_timer_->cancel();
    pending_request_.reset();
    core_->forget(*this);  // may end a shutdown: keep it last
  }

 private:
  enum class State { handshake, idle, reading, waiting, writing, lingering, closed };

  std::shared_ptr<Session> self() { return this->shared_from_this(); }
  beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }
  const ServerOptions& options() const { return core_->options(); }

  void on_handshake(beast::error_code ec) {
    if (state_ == State::closed) return;
    core_->mark_busy(*this);
    if (ec) return close_now();
    if constexpr (kTls) {
      if (core_->is_async()) peer_.client_cert = client_certificate(stream_.native_handle());
    }
    wait_for_request();
  }

  void wait_for_request() {
    if (core_->closing()) return linger_close();
    if (buffer_.size() > 0) return read_head();  // the next pipelined request is already here
    if (buffer_.capacity() > kKeptBufferBytes) buffer_.shrink_to_fit();
    state_ = State::idle;
    core_->mark_idle(*this);
    lowest().expires_after(options().idle_timeout);
    stream_.async_read_some(buffer_.prepare(std::max(kIdleReadBytes, buffer_.capacity())),
                            beast::bind_front_handler(&Session::on_first_bytes, self()));
  }

  void on_first_bytes(beast::error_code ec, size_t bytes) {
    if (state_ == State::closed) return;
    core_->mark_busy(*this);
    if (ec) return close_now();  // idle timeout, the client left, or a TLS error
    buffer_.commit(bytes);
    read_head();
  }

  void read_head() {
    state_ = State::reading;
    parser_ = std::make_unique<RequestParser>();
    parser_->header_limit(static_cast<std::uint32_t>(
        std::min<size_t>(options().header_limit_bytes, std::numeric_limits<std::uint32_t>::max())));
    parser_->body_limit(options().body_limit_bytes);
    // The deadline runs from the first byte of the request, whatever the client's pace after it.
    lowest().expires_after(options().header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::on_head, self()));
  }

  void on_head(beast::error_code ec, size_t) {
    if (state_ == State::closed) return;
    if (ec) return on_read_error(ec);
    if (parser_->is_done()) return handle();
    // The body gets a deadline of its own, as long as the head's.
    lowest().expires_after(options().header_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::on_body, self()));
  }

  void on_body(beast::error_code ec, size_t) {
    if (state_ == State::closed) return;
    if (ec) return on_read_error(ec);
    handle();
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::header_limit) {
      return respond_and_close(http::status::request_header_fields_too_large,
                               "request header fields too large\n");
    }
    if (ec == http::error::body_limit) {
      return respond_and_close(http::status::payload_too_large, "request body too large\n");
    }
    if (is_parse_error(ec)) return respond_and_close(http::status::bad_request, "bad request\n");
    close_now();  // a deadline passed, the client left, or the server is stopping
  }

  void respond_and_close(http::status status, std::string_view body) {
    path_ = path_of(parser_->get().target());
    parser_.reset();
    started_ = SteadyClock::now();
    Response response = text_response(status, body);
    response.keep_alive(false);
    response.set(http::field::date, core_->date());
    response.prepare_payload();
    keep_alive_ = false;
    write(std::move(response));
  }

  void handle() {
    Request request = parser_->release();
    parser_.reset();
    started_ = SteadyClock::now();
    path_ = path_of(request.target());
    if (request.version() >= 11 && request.count(http::field::host) == 0) {
      // RFC 9112 section 3.2: an HTTP/1.1 request without Host is answered 400.
      Response response = text_response(http::status::bad_request, "missing Host header\n");
      response.keep_alive(false);
      response.set(http::field::date, core_->date());
      response.prepare_payload();
      keep_alive_ = false;
      return write(std::move(response));
    }
    if (core_->is_async()) return dispatch(std::move(request));
    finish(request, core_->handle(request));
  }

  // Hands the request to the AsyncHandler and waits (reading nothing more) for its reply.
  void dispatch(Request request) {
    state_ = State::waiting;
    auto shared = std::make_shared<const Request>(std::move(request));
    pending_request_ = shared;
    const std::uint64_t sequence = ++reply_sequence_;
    if (!reply_timer_) reply_timer_ = std::make_unique<net::steady_timer>(core_->io());
    reply_timer_->expires_after(options().reply_timeout);
    // The pending wait also keeps the session alive while the handler works.
    reply_timer_->async_wait([self = self(), sequence](beast::error_code ec) {
      if (ec) return;
      self->on_reply(sequence, text_response(http::status::service_unavailable,
                                             "the request was not answered in time\n"));
    });
    std::weak_ptr<Session> weak = self();
    Reply reply = [weak, sequence, shared, executor = core_->io().get_executor()](Response r) {
      net::post(executor, [weak, sequence, r = std::move(r)]() mutable {
        if (auto session = weak.lock()) session->on_reply(sequence, std::move(r));
      });
    };
    try {
      core_->async_handler()(*shared, peer_, std::move(reply));
    } catch (...) {
      // The handler's failure is this request's alone; a reply it already sent comes too late.
      on_reply(sequence,
               text_response(http::status::internal_server_error, "internal server error\n"));
    }
  }

  void on_reply(std::uint64_t sequence, Response response) {
    // Late: after the timeout answered, a second reply, or the connection closed.
    if (state_ != State::waiting || sequence != reply_sequence_) return;
    if (reply_timer_) reply_timer_->cancel();
    std::shared_ptr<const Request> request = std::move(pending_request_);
    finish(*request, std::move(response));
  }

  void finish(const Request& request, Response response) {
    response.version(request.version());
    keep_alive_ = request.keep_alive() && !has_token(response, http::field::connection, "close") &&
                  !core_->closing();
    response.keep_alive(keep_alive_);
    if (response.count(http::field::date) == 0) response.set(http::field::date, core_->date());
    if (!status_has_body(response.result_int())) response.body().clear();
    try {
      maybe_gzip(request, response, options().gzip_min_bytes);
    } catch (const std::exception&) {
      // Out of memory for the compressed copy: the body goes as it is.
      response.erase(http::field::content_encoding);
    }
    response.prepare_payload();
    if (request.method() == http::verb::head) {
      // The length the same GET would have, and no body.
      size_t length = response.body().size();
      std::string().swap(response.body());
      if (status_has_body(response.result_int())) response.content_length(length);
    }
    write(std::move(response));
  }

  void write(Response response) {
    state_ = State::writing;
    response_ = std::make_unique<Response>(std::move(response));
    lowest().expires_after(options().write_timeout);
    http::async_write(stream_, *response_, beast::bind_front_handler(&Session::on_write, self()));
  }

  void on_write(beast::error_code ec, size_t) {
    core_->observe(path_, response_->result_int(), SteadyClock::now() - started_);
    response_.reset();
    path_.clear();
    if (state_ == State::closed) return;
    if (ec) return close_now();
    if (!keep_alive_) return linger_close();
    wait_for_request();
  }

  // Ends the connection after its last response: TLS close_notify, then a half close, then
  // reading and discarding until the client closes too (or kLingerTimeout passes).
  void linger_close() {
    state_ = State::lingering;
    core_->mark_lingering(*this);
    lowest().expires_after(kLingerTimeout);
    if constexpr (kTls) {
      // Send close_notify without waiting for the client's.
      SSL_set_shutdown(stream_.native_handle(), SSL_RECEIVED_SHUTDOWN);
      stream_.async_shutdown(beast::bind_front_handler(&Session::on_tls_shutdown, self()));
    } else {
      half_close();
    }
  }

  void on_tls_shutdown(beast::error_code ec) {
    if (state_ == State::closed) return;
    if (ec) return close_now();
    half_close();
  }

  void half_close() {
    beast::error_code ignored;
    lowest().socket().shutdown(tcp::socket::shutdown_send, ignored);
    // A stopping server does not wait for clients to hang up: the response is on its way.
    if (core_->closing()) return close_now();
    drain({}, 0);
  }

  void drain(beast::error_code ec, size_t) {
    if (state_ == State::closed) return;
    if (ec) return close_now();  // the client closed (or the linger deadline passed)
    buffer_.clear();
    lowest().async_read_some(buffer_.prepare(kIdleReadBytes),
                             beast::bind_front_handler(&Session::drain, self()));
  }

  std::shared_ptr<Core> core_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::unique_ptr<RequestParser> parser_;
  std::unique_ptr<Response> response_;
  std::shared_ptr<const Request> pending_request_;  // the request an AsyncHandler works on
  std::unique_ptr<net::steady_timer> reply_timer_;  // made on the first asynchronous request
  std::uint64_t reply_sequence_ = 0;
  Peer peer_;  // filled for an AsyncHandler only
  std::string path_;
  SteadyClock::time_point started_;
  State state_ = State::idle;
  bool keep_alive_ = false;
};

using PlainSession = Session<beast::tcp_stream>;
using TlsSession = Session<beast::ssl_stream<beast::tcp_stream>>;

Response Core::handle(const Request& request) {
  try {
    return handler_(request);
  } catch (...) {
    // The handler's failure is this request's alone; the connection carries on.
    return text_response(http::status::internal_server_error, "internal server error\n");
  }
}

boost::system::result<void, std::string> Core::start() {
  if (started_) return std::string("the server was already started");
  started_ = true;
  raise_descriptor_limit(static_cast<rlim_t>(options_.max_connections) + kSpareDescriptors);
  for (const std::string& value : options_.listen) {
    if (auto r = listen_on(value); !r) {
      close_listeners();
      return r;
    }
  }
  for (int fd : options_.inherited_fds) {
    if (auto r = adopt_listener(fd); !r) {
      close_listeners();
      return r;
    }
  }
  for (auto& listener : listeners_)
    accept(*listener);
  return {};
}

boost::system::result<void, std::string> Core::listen_on(const std::string& value) {
  auto endpoint = parse_listen_address(value);
  if (!endpoint) return endpoint.error();
  auto fail = [&](const beast::error_code& ec) -> boost::system::result<void, std::string> {
    return "--listen " + value + ": " + lowercase_first(ec.message());
  };
  bool all_addresses = !value.empty() && value[0] == ':';
  auto listener = std::make_unique<Listener>(io_);
  tcp::acceptor& acceptor = listener->acceptor;
  beast::error_code ec;
  acceptor.open(endpoint->protocol(), ec);
  if (ec && all_addresses) {
    // No IPv6 on this host: all IPv4 addresses are what ":port" can still mean.
    *endpoint = tcp::endpoint(net::ip::address_v4::any(), endpoint->port());
    ec.clear();
    acceptor.open(endpoint->protocol(), ec);
  }
  if (ec) return fail(ec);
  if (endpoint->address().is_v6() && endpoint->address().is_unspecified()) {
    acceptor.set_option(net::ip::v6_only(false), ec);  // dual stack; a v6-only host keeps v6
  }
  acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (ec) return fail(ec);
  acceptor.bind(*endpoint, ec);
  if (ec) return fail(ec);
  acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return fail(ec);
  endpoints_.push_back(acceptor.local_endpoint(ec));
  if (ec) return fail(ec);
  listeners_.push_back(std::move(listener));
  return {};
}

boost::system::result<void, std::string> Core::adopt_listener(int fd) {
  std::string name = "inherited socket " + std::to_string(fd);
  sockaddr_storage address{};
  socklen_t address_length = sizeof address;
  int type = 0;
  int listening = 0;
  socklen_t int_length = sizeof(int);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &address_length) != 0) {
    return name + ": " + lowercase_first(std::generic_category().message(errno));
  }
  if ((address.ss_family != AF_INET && address.ss_family != AF_INET6) ||
      getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &int_length) != 0 || type != SOCK_STREAM ||
      getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &int_length) != 0 || listening == 0) {
    return name + ": not a listening TCP socket";
  }
  auto listener = std::make_unique<Listener>(io_);
  beast::error_code ec;
  listener->acceptor.assign(address.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
  if (ec) return name + ": " + lowercase_first(ec.message());
  endpoints_.push_back(listener->acceptor.local_endpoint(ec));
  if (ec) return name + ": " + lowercase_first(ec.message());
  listeners_.push_back(std::move(listener));
  return {};
}

void Core::accept(Listener& listener) {
  listener.acceptor.async_accept(
      [self = shared_from_this(), &listener](beast::error_code ec, tcp::socket socket) {
        self->on_accept(listener, ec, std::move(socket));
      });
}

void Core::on_accept(Listener& listener, beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || closing_) return;
  if (ec == net::error::no_descriptors || ec == net::error::no_buffer_space ||
      ec == net::error::no_memory || ec.value() == ENFILE) {
    // Out of descriptors: an idle connection gives its own up for the waiting client.
    if (!idle_.empty()) {
      idle_.front().close_now();
      return accept(listener);
    }
    listener.retry.expires_after(kAcceptRetry);
    listener.retry.async_wait([self = shared_from_this(), &listener](beast::error_code wait_ec) {
      if (!wait_ec && !self->closing_) self->accept(listener);
    });
    return;
  }
  if (!ec) admit(std::move(socket));
  accept(listener);
}

void Core::admit(tcp::socket socket) {
  if (sessions_.size() >= options_.max_connections) {
    if (idle_.empty()) return;  // every connection is busy: the newcomer is closed
    idle_.front().close_now();
  }
  beast::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  if (options_.tls) {
    std::make_shared<TlsSession>(shared_from_this(), std::move(socket), *options_.tls)->start();
  } else {
    std::make_shared<PlainSession>(shared_from_this(), std::move(socket))->start();
  }
}

void Core::close_listeners() {
  for (auto& listener : listeners_) {
    beast::error_code ignored;
    listener->acceptor.close(ignored);
    listener->retry.cancel();
  }
}

void Core::shutdown(std::chrono::milliseconds grace, std::function<void()> done) {
  if (closing_) {
    // A second request: its done joins the first one's.
    if (finished_) return net::post(io_, std::move(done));
    done_ = [first = std::move(done_), second = std::move(done)] {
      if (first) first();
      if (second) second();
    };
    return;
  }
  closing_ = true;
  done_ = std::move(done);
  close_listeners();
  while (!idle_.empty())
    idle_.front().close_now();
  if (sessions_.empty()) return finish_shutdown();
  grace_timer_.expires_after(grace);
  grace_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec || self->finished_) return;
    while (!self->sessions_.empty())
      self->sessions_.front().close_now();
  });
}

void Core::finish_shutdown() {
  if (finished_) return;
  finished_ = true;
  grace_timer_.cancel();
  if (done_) net::post(io_, std::move(done_));
  done_ = nullptr;
}

void Core::abort() {
  closing_ = true;
  finished_ = true;
  done_ = nullptr;
  grace_timer_.cancel();
  close_listeners();
  while (!sessions_.empty())
    sessions_.front().close_now();
}

}  // namespace

std::string format_endpoints(const std::vector<tcp::endpoint>& endpoints) {
  std::string out;
  for (const auto& ep : endpoints) {
    if (!out.empty()) out += ",";
    const std::string address = ep.address().to_string();
    out += (ep.address().is_v6() ? "[" + address + "]" : address) + ":" + std::to_string(ep.port());
  }
  return out;
}

void raise_descriptor_limit(uint64_t wanted) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= wanted) return;
  limit.rlim_cur =
      limit.rlim_max == RLIM_INFINITY ? wanted : std::min<rlim_t>(wanted, limit.rlim_max);
  setrlimit(RLIMIT_NOFILE, &limit);
}

boost::system::result<tcp::endpoint, std::string> parse_listen_address(const std::string& value) {
  auto fail = [&](std::string_view why) -> boost::system::result<tcp::endpoint, std::string> {
    return "--listen " + value + ": " + std::string(why);
  };
  std::string_view text = value;
  std::string_view host;
  std::string_view port_text;
  bool bracketed = !text.empty() && text.front() == '[';
  if (bracketed) {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return fail("an IPv6 address needs both brackets");
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return fail("expected a port after the IPv6 address, as in [::1]:10261");
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("expected host:port, [IPv6]:port or :port");
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return fail("an IPv6 address must be in brackets, as in [::1]:10261");
    }
  }

  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      port > 65535) {
    return fail("the port must be a number from 0 to 65535");
  }

  beast::error_code address_ec;
  net::ip::address address;
  if (bracketed) {
    address = net::ip::make_address_v6(host, address_ec);
    if (address_ec) return fail("\"" + std::string(host) + "\" is not an IPv6 address");
  } else if (host.empty()) {
    address = net::ip::address_v6::any();  // all addresses; IPv4 too through the dual stack
  } else {
    address = net::ip::make_address_v4(host, address_ec);
    if (address_ec && host.find_first_not_of("0123456789.") == std::string_view::npos) {
      return fail("\"" + std::string(host) + "\" is not an IPv4 address");
    }
    if (address_ec) {
      return fail("the host must be a literal IP address such as 127.0.0.1 or [::1], not a name");
    }
  }
  return tcp::endpoint(address, static_cast<unsigned short>(port));
}

struct Server::Impl : Core {
  using Core::Core;
};

Server::Server(net::io_context& io, ServerOptions options, Handler handler,
               ResponseObserver observer)
    : impl_(std::make_shared<Impl>(io, std::move(options), std::move(handler), AsyncHandler{},
                                   std::move(observer))) {}

Server::Server(net::io_context& io, ServerOptions options, AsyncHandler handler,
               ResponseObserver observer)
    : impl_(std::make_shared<Impl>(io, std::move(options), Handler{}, std::move(handler),
                                   std::move(observer))) {}

Server::~Server() {
  impl_->abort();
}

boost::system::result<void, std::string> Server::start() {
  return impl_->start();
}

std::vector<tcp::endpoint> Server::local_endpoints() const {
  return impl_->local_endpoints();
}

void Server::shutdown(std::chrono::milliseconds grace, std::function<void()> done) {
  // Callable from any thread; the work happens on the io thread.
  std::shared_ptr<Core> core = impl_;
  net::post(core->io(), [core, grace, done = std::move(done)]() mutable {
    core->shutdown(grace, std::move(done));
  });
}

size_t Server::connection_count() const {
  return impl_->connection_count();
}

}  // namespace nodemeter::api
