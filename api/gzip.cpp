#include "api/gzip.h"

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <new>
#include <optional>
#include <stdexcept>

namespace nodemeter::api {

namespace {

// windowBits 15 plus 16 asks zlib for the gzip header and trailer instead of the zlib ones.
constexpr int kGzipWindowBits = 15 + 16;
constexpr int kMemLevel = 8;
// zlib counts in uInt; larger inputs are fed in pieces of this size.
constexpr size_t kMaxStep = size_t{1} << 30;

struct DeflateStream {
  z_stream z{};
  ~DeflateStream() { deflateEnd(&z); }
};

}  // namespace

std::string gzip_compress(std::string_view input, int level) {
  if (level < 0 || level > 9) throw std::invalid_argument("gzip level must be 0..9");
  DeflateStream stream;
  int rc =
      deflateInit2(&stream.z, level, Z_DEFLATED, kGzipWindowBits, kMemLevel, Z_DEFAULT_STRATEGY);
  if (rc == Z_MEM_ERROR) throw std::bad_alloc();
  if (rc != Z_OK) throw std::invalid_argument("deflateInit2 rejected its parameters");

  std::string out;
  // deflateBound covers the whole stream, so the output never needs to grow.
  out.resize(deflateBound(&stream.z, static_cast<uLong>(input.size())));
  size_t in_pos = 0;
  size_t out_pos = 0;
  for (;;) {
    size_t in_step = std::min(input.size() - in_pos, kMaxStep);
    size_t out_step = std::min(out.size() - out_pos, kMaxStep);
    stream.z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(input.data() + in_pos));
    stream.z.avail_in = static_cast<uInt>(in_step);
    stream.z.next_out = reinterpret_cast<Bytef*>(out.data() + out_pos);
    stream.z.avail_out = static_cast<uInt>(out_step);
    bool last = in_pos + in_step == input.size();
    rc = deflate(&stream.z, last ? Z_FINISH : Z_NO_FLUSH);
    in_pos += in_step - stream.z.avail_in;
    out_pos += out_step - stream.z.avail_out;
    if (rc == Z_STREAM_END) break;
    if (rc != Z_OK && rc != Z_BUF_ERROR) throw std::runtime_error("deflate failed");
    if (out_pos == out.size()) out.resize(out.size() * 2);
  }
  out.resize(out_pos);
  return out;
}

namespace {

constexpr std::string_view kWhitespace = " \t";

std::string_view trim(std::string_view s) {
  size_t begin = s.find_first_not_of(kWhitespace);
  if (begin == std::string_view::npos) return {};
  size_t end = s.find_last_not_of(kWhitespace);
  return s.substr(begin, end - begin + 1);
}

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    return lower(x) == lower(y);
  });
}

// RFC 9110 qvalue: "0" [ "." 0*3DIGIT ] or "1" [ "." 0*3("0") ], in thousandths. Digits past the
// third are tolerated (some clients send them) but must still be digits.
std::optional<int> parse_qvalue(std::string_view v) {
  if (v.empty() || (v[0] != '0' && v[0] != '1')) return std::nullopt;
  int whole = v[0] - '0';
  int thousandths = 0;
  if (v.size() > 1) {
    if (v[1] != '.') return std::nullopt;
    int scale = 100;
    for (char c : v.substr(2)) {
      if (c < '0' || c > '9') return std::nullopt;
      thousandths += (c - '0') * scale;
      scale /= 10;
    }
  }
  int q = whole * 1000 + thousandths;
  if (q > 1000) return std::nullopt;
  return q;
}

// The q of one list element ("gzip;q=0.5"), 1000 when absent, 0 when malformed.
int element_q(std::string_view params) {
  int q = 1000;
  while (!params.empty()) {
    size_t semi = params.find(';');
    std::string_view param = trim(params.substr(0, semi));
    params = semi == std::string_view::npos ? std::string_view{} : params.substr(semi + 1);
    size_t eq = param.find('=');
    if (eq == std::string_view::npos) continue;
    if (!iequals(trim(param.substr(0, eq)), "q")) continue;
    q = parse_qvalue(trim(param.substr(eq + 1))).value_or(0);
  }
  return q;
}

}  // namespace

bool accepts_gzip(std::string_view accept_encoding) {
  std::optional<int> gzip_q;
  std::optional<int> any_q;
  while (!accept_encoding.empty()) {
    size_t comma = accept_encoding.find(',');
    std::string_view element = accept_encoding.substr(0, comma);
    accept_encoding =
        comma == std::string_view::npos ? std::string_view{} : accept_encoding.substr(comma + 1);
    size_t semi = element.find(';');
    std::string_view coding = trim(element.substr(0, semi));
    std::string_view params =
        semi == std::string_view::npos ? std::string_view{} : element.substr(semi + 1);
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) {
      gzip_q = std::max(gzip_q.value_or(0), element_q(params));
    } else if (coding == "*") {
      any_q = std::max(any_q.value_or(0), element_q(params));
    }
  }
  if (gzip_q) return *gzip_q > 0;
  return any_q.value_or(0) > 0;
}

}  // namespace nodemeter::api
