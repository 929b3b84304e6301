// The HTTP(S) server: Boost.Beast, asynchronous, one io_context. It only moves bytes: every
// response comes from a Handler, a pure function of the request, or from an AsyncHandler that
// answers later (after an authentication review, say) and sees who is asking. Keep-alive and
// pipelining, limits on headers (431) and bodies (413), a deadline for a request's headers (slow
// clients are closed), a connection cap past which the least recently active idle connection is
// closed, gzip for clients that accept it, and graceful shutdown.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nodemeter::api {

namespace http = boost::beast::http;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// Called on the server's thread for every complete request. Must not block for long.
using Handler = std::function<Response(const Request&)>;

// The certificate a TLS client presented (only asked for when the TLS context names client CAs).
struct ClientCertificate {
  std::string common_name;                 // the subject's CN (the last one, as Go reads it)
  std::vector<std::string> organizations;  // the subject's O values, in order
  bool verified = false;  // the chain verified against the TLS context's client CAs
};

// Who is on the other end of a connection.
struct Peer {
  boost::asio::ip::address address;
  bool tls = false;
  std::optional<ClientCertificate> client_cert;
};

// Called on the server's thread for every complete request; answers by calling reply once, now
// or later, from any thread (the response is handed to the server's thread). The request stays
// valid for as long as reply or any copy of it exists. Responses go out in request order; a
// request not answered within ServerOptions::reply_timeout is answered 503 and a late reply is
// dropped. reply must not be called after the io_context is destroyed.
using Reply = std::function<void(Response)>;
using AsyncHandler = std::function<void(const Request&, const Peer&, Reply reply)>;

// Told about every response, for self metrics (path without the query, status, duration).
using ResponseObserver =
    std::function<void(std::string_view path, unsigned status, std::chrono::nanoseconds elapsed)>;

struct ServerOptions {
  std::vector<std::string> listen;  // "127.0.0.1:10261", "[::1]:0", ":10261" (all addresses)
  std::vector<int> inherited_fds;   // listening sockets handed over (systemd socket activation)
  size_t max_connections = 16384;
  size_t header_limit_bytes = 16 * 1024;
  size_t body_limit_bytes = 1024 * 1024;
  std::chrono::milliseconds header_timeout{10'000};  // whole request head must arrive by then
  std::chrono::milliseconds idle_timeout{120'000};   // keep-alive connection with no request
  std::chrono::milliseconds write_timeout{30'000};   // a client that does not read its response
  std::chrono::milliseconds reply_timeout{30'000};   // an AsyncHandler that never replies: 503
  size_t gzip_min_bytes = 1024;                      // smaller bodies are sent as they are
  std::shared_ptr<boost::asio::ssl::context> tls;    // serve HTTPS when set
};

// Parses "host:port", "[v6]:port" or ":port"; the error names the value.
boost::system::result<boost::asio::ip::tcp::endpoint, std::string> parse_listen_address(
    const std::string& value);

// "127.0.0.1:10261", "[::1]:10261": an endpoint as --listen spells it; several joined by commas.
std::string format_endpoints(const std::vector<boost::asio::ip::tcp::endpoint>& endpoints);

// Raises the soft RLIMIT_NOFILE towards `wanted`, never above the hard limit and never down.
void raise_descriptor_limit(uint64_t wanted);

class Server {
 public:
  Server(boost::asio::io_context& io, ServerOptions options, Handler handler,
         ResponseObserver observer = {});
  Server(boost::asio::io_context& io, ServerOptions options, AsyncHandler handler,
         ResponseObserver observer = {});
  // Closes everything at once. Destroy on the io thread or once the io_context stopped running.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and starts accepting. The error is one sentence naming the address.
  boost::system::result<void, std::string> start();
  // The bound endpoints (with the real port when 0 was asked), in the order of options.listen.
  std::vector<boost::asio::ip::tcp::endpoint> local_endpoints() const;
  // Stops accepting, lets in-flight responses finish, closes idle connections; calls done after
  // the last connection closed (or after grace, closing the rest). Callable from any thread;
  // done runs on the io_context's thread.
  void shutdown(std::chrono::milliseconds grace, std::function<void()> done);
  // Open connections; readable from any thread.
  size_t connection_count() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace nodemeter::api
