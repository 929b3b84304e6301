// TLS for the server: a certificate pair from files or a self-signed pair made in memory at start,
// the protocol floor and cipher suites a Go server (and so the API server's clients) would
// accept, and optionally client certificates asked for (never required) and verified against a
// CA, so that request-header and bearer-token clients can share one listener.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace nodemeter::api {

struct ServerTlsOptions {
  std::string cert_file;     // PEM chain, leaf first
  std::string key_file;      // PEM private key
  bool self_signed = false;  // no files: generate a pair in memory (files win when given)
  std::vector<std::string> self_signed_hosts;  // DNS names and IP literals for the SANs
  std::string min_version = "1.2";             // "1.2" or "1.3" (VersionTLS12/13 also)
  std::string client_ca_pem;  // ask for client certificates and verify them against this bundle
};

// The context for Server; the error is one sentence naming the file or value at fault.
boost::system::result<std::shared_ptr<boost::asio::ssl::context>, std::string> make_server_tls(
    const ServerTlsOptions& options);

// "1.2", "1.3", "VersionTLS12", "VersionTLS13" (the Kubernetes spelling) → "1.2" or "1.3".
boost::system::result<std::string, std::string> parse_tls_version(std::string_view text);

struct CertificatePair {
  std::string cert_pem;
  std::string key_pem;
};
// A self-signed EC P-256 serving certificate: CN the first host, every host a SAN (IP literals as
// IP SANs), serverAuth, valid from a minute ago for `validity`. Empty hosts: localhost,
// 127.0.0.1 and ::1.
boost::system::result<CertificatePair, std::string> make_self_signed_pair(
    const std::vector<std::string>& hosts,
    std::chrono::seconds validity = std::chrono::hours(24 * 365));

// The PEM of the certificate a context serves (to log or publish a self-signed one); empty when
// it has none.
std::string served_certificate_pem(boost::asio::ssl::context& context);

}  // namespace nodemeter::api
