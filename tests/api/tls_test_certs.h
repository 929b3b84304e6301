// Certificates for TLS tests, made with OpenSSL's API: a CA that issues server and client
// certificates with a chosen CN, O values and SANs. Everything is PEM text; nothing touches disk
// unless a test writes it.
#pragma once

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace nodemeter::test {

struct PemPair {
  std::string cert_pem;
  std::string key_pem;
};

class TestCa {
 public:
  explicit TestCa(const std::string& common_name) : key_(EVP_EC_gen("P-256"), EVP_PKEY_free) {
    if (!key_) throw std::runtime_error("cannot make a key");
    cert_.reset(X509_new());
    start(cert_.get(), key_.get(), common_name, {});
    X509_set_issuer_name(cert_.get(), X509_get_subject_name(cert_.get()));
    extension(cert_.get(), cert_.get(), NID_basic_constraints, "critical,CA:TRUE");
    extension(cert_.get(), cert_.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
    extension(cert_.get(), cert_.get(), NID_subject_key_identifier, "hash");
    if (X509_sign(cert_.get(), key_.get(), EVP_sha256()) <= 0) throw std::runtime_error("sign");
  }

  std::string cert_pem() const { return to_pem(cert_.get()); }

  // A leaf for a TLS client (clientAuth) or server (serverAuth, with `hosts` as SANs).
  PemPair issue(const std::string& common_name, const std::vector<std::string>& organizations,
                bool client, const std::vector<std::string>& hosts = {}) const {
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
    std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
    start(cert.get(), key.get(), common_name, organizations);
    X509_set_issuer_name(cert.get(), X509_get_subject_name(cert_.get()));
    extension(cert.get(), cert_.get(), NID_basic_constraints, "critical,CA:FALSE");
    extension(cert.get(), cert_.get(), NID_key_usage, "critical,digitalSignature");
    extension(cert.get(), cert_.get(), NID_ext_key_usage, client ? "clientAuth" : "serverAuth");
    extension(cert.get(), cert_.get(), NID_authority_key_identifier, "keyid");
    if (!hosts.empty()) {
      std::string sans;
      for (const std::string& host : hosts) {
        if (!sans.empty()) sans += ",";
        const bool ip = host.find_first_not_of("0123456789.:") == std::string::npos;
        sans += (ip ? "IP:" : "DNS:") + host;
      }
      extension(cert.get(), cert_.get(), NID_subject_alt_name, sans.c_str());
    }
    if (X509_sign(cert.get(), key_.get(), EVP_sha256()) <= 0) throw std::runtime_error("sign");
    PemPair pair;
    pair.cert_pem = to_pem(cert.get());
    std::unique_ptr<BIO, decltype(&BIO_free_all)> bio(BIO_new(BIO_s_mem()), BIO_free_all);
    PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    char* data = nullptr;
    long length = BIO_get_mem_data(bio.get(), &data);
    pair.key_pem.assign(data, static_cast<size_t>(length));
    return pair;
  }

 private:
  static void start(X509* cert, EVP_PKEY* key, const std::string& common_name,
                    const std::vector<std::string>& organizations) {
    X509_set_version(cert, X509_VERSION_3);
    std::unique_ptr<BIGNUM, decltype(&BN_free)> serial(BN_new(), BN_free);
    BN_rand(serial.get(), 64, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
    BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert));
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    for (const std::string& o : organizations) {
      X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(o.c_str()), -1, -1, 0);
    }
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1,
                               0);
  }

  static void extension(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    if (!ext) throw std::runtime_error("bad extension");
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }

  static std::string to_pem(X509* cert) {
    std::unique_ptr<BIO, decltype(&BIO_free_all)> bio(BIO_new(BIO_s_mem()), BIO_free_all);
    PEM_write_bio_X509(bio.get(), cert);
    char* data = nullptr;
    long length = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<size_t>(length));
  }

  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key_;
  std::unique_ptr<X509, decltype(&X509_free)> cert_{nullptr, X509_free};
};

}  // namespace nodemeter::test
