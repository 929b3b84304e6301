#include "api/quantity.h"

namespace nodemeter::api {
namespace {

// The DecimalSI suffix of a base-10 exponent that is a multiple of 3, from "n" (-9) to "E" (18).
const char* decimal_suffix(int exponent) {
  switch (exponent) {
    case -9:
      return "n";
    case -6:
      return "u";
    case -3:
      return "m";
    case 0:
      return "";
    case 3:
      return "k";
    case 6:
      return "M";
    case 9:
      return "G";
    case 12:
      return "T";
    case 15:
      return "P";
    case 18:
      return "E";
  }
  return nullptr;
}

// int64Amount.AsCanonicalBytes + the DecimalSI suffix: move factors of ten into the exponent,
// then bring the exponent down to a multiple of three by appending zeros to the mantissa.
std::string canonical_decimal(uint64_t value, int exponent) {
  std::string mantissa = std::to_string(value);
  while (mantissa.size() > 1 && mantissa.back() == '0') {
    mantissa.pop_back();
    ++exponent;
  }
  while (exponent % 3 != 0) {
    mantissa += '0';
    --exponent;
  }
  // Values here stay within n..G (2^64 nanocores is 1.8e10); the exponent form is only for
  // completeness, as CanonicalizeBytes falls back to it past "E".
  if (const char* suffix = decimal_suffix(exponent)) return mantissa + suffix;
  return mantissa + "e" + std::to_string(exponent);
}

}  // namespace

std::string format_cpu_nanocores(uint64_t nano_cores) {
  if (nano_cores == 0) return "0";
  return canonical_decimal(nano_cores, -9);
}

std::string format_memory_bytes(uint64_t bytes) {
  if (bytes == 0) return "0";
  // Under 1024 BinarySI would only round, so Kubernetes prints DecimalSI: 1000 is "1k".
  if (bytes < 1024) return canonical_decimal(bytes, 0);
  static constexpr const char* kBinarySuffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  int exponent = 0;
  while (bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++exponent;
  }
  return std::to_string(bytes) + kBinarySuffixes[exponent];
}

}  // namespace nodemeter::api
