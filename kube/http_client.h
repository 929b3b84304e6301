// An asynchronous HTTP/1.1 client on Boost.Beast and OpenSSL for one base URL (an API server or
// an agent): keep-alive connections reused across requests, a deadline per exchange, TLS with a
// CA to verify against (or insecure-skip-verify, said loudly by the caller) and client
// certificates, and streamed responses read line by line (watches).
// Everything runs on the io_context given; callbacks are called on its thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nodemeter::kube {

// "https://10.96.0.1:443", "http://127.0.0.1:10261", "https://[::1]:6443/prefix".
struct BaseUrl {
  bool tls = true;
  std::string host;         // without brackets for IPv6
  std::string port;         // "443"/"80" where the URL has none
  std::string path_prefix;  // without a trailing slash; usually empty
};
// The error names the value and what is wrong with it.
boost::system::result<BaseUrl, std::string> parse_base_url(std::string_view url);

struct TlsClientOptions {
  std::string ca_file;  // PEM bundle the server's certificate must chain to
  std::string ca_pem;   // or the bundle itself (kubeconfig certificate-authority-data, decoded)
  std::string client_cert_file;
  std::string client_key_file;
  std::string client_cert_pem;  // or the pair itself (kubeconfig client-*-data, decoded)
  std::string client_key_pem;
  bool insecure_skip_verify = false;  // no CA check and no host name check
  std::string server_name;            // SNI and host name to verify; default: the URL's host
};

struct HttpRequest {
  boost::beast::http::verb method = boost::beast::http::verb::get;
  std::string target;  // path and query, appended to the base URL's path prefix
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;                           // sent with Content-Length when not empty
  std::chrono::milliseconds timeout{10'000};  // connect + send + whole response
};

struct HttpResponse {
  unsigned status = 0;
  boost::beast::http::fields headers;
  std::string body;
};

// Transport failures (refused, reset, TLS verification, deadline, oversized response) are errors:
// one sentence naming the URL. Any HTTP status is a response.
using HttpResult = boost::system::result<HttpResponse, std::string>;

// What stream() calls: the status and headers once, then each line of the body as it arrives
// (without the newline), then done with an empty string for a body the server ended, or the error.
struct StreamCallbacks {
  std::function<void(unsigned status, const boost::beast::http::fields& headers)> on_head;
  std::function<void(std::string_view line)> on_line;
  std::function<void(const std::string& error)> on_done;
};

// Ends a stream early; on_done is then called with "cancelled". Safe to call more than once.
class StreamHandle {
 public:
  virtual ~StreamHandle() = default;
  virtual void cancel() = 0;
};

class HttpClient {
 public:
  // The error names what could not be loaded (a CA or key file).
  static boost::system::result<std::shared_ptr<HttpClient>, std::string> create(
      boost::asio::io_context& io, std::string_view base_url, const TlsClientOptions& tls,
      size_t max_idle_connections = 4);
  virtual ~HttpClient() = default;

  // One exchange on a reused idle connection or a new one.
  virtual void request(HttpRequest request, std::function<void(HttpResult)> done) = 0;
  // A long response read line by line (a watch); request.timeout bounds the wait for the head
  // and any silence between lines, not the stream's length. Its connection is not reused.
  virtual std::shared_ptr<StreamHandle> stream(HttpRequest request, StreamCallbacks callbacks) = 0;
  // Closes idle connections and cancels what is in flight (their callbacks get errors).
  virtual void shutdown() = 0;

  virtual size_t connections_opened() const = 0;  // for tests of reuse and for self metrics
};

}  // namespace nodemeter::kube
