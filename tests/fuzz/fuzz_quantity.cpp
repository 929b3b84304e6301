// Quantity formatting (api/quantity.h): the input's first 16 bytes are two 64-bit values, one
// formatted as CPU nanocores and one as memory bytes. There is no quantity parser in the tree, so
// this one reads Kubernetes' canonical forms independently and checks: the text parses back to
// exactly the value; the form is canonical (no leading zeros; a DecimalSI mantissa keeps at most
// two trailing zeros, i.e. is not a multiple of 1000, and a BinarySI one is not a multiple of
// 1024, unless it already carries the largest suffix; memory under 1024 is DecimalSI).
#include <cstring>
#include <limits>
#include <string>

#include "api/quantity.h"
#include "fuzz_check.h"

namespace {

using u128 = unsigned __int128;

struct Parsed {
  u128 mantissa = 0;
  std::string suffix;
  bool exact = false;  // the value below is the quantity's exact integer value in base units
  u128 value = 0;      // in the base unit passed to parse (nanocores or bytes)
};

u128 pow_int(u128 base, int exp) {
  u128 r = 1;
  while (exp-- > 0)
    r *= base;
  return r;
}

// base_exponent: the power of ten of one base unit (-9 for nanocores, 0 for bytes). binary: the
// value is printed BinarySI (memory from 1024 bytes), where a plain number is 1024^0.
Parsed parse(const std::string& s, int base_exponent, bool binary) {
  Parsed p;
  size_t i = 0;
  FUZZ_CHECK(!s.empty() && s[0] >= '0' && s[0] <= '9', "a quantity starts with a digit");
  FUZZ_CHECK(s == "0" || s[0] != '0', "no leading zeros");
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    FUZZ_CHECK(i < 30, "the mantissa stays short");
    p.mantissa = p.mantissa * 10 + static_cast<unsigned>(s[i] - '0');
  }
  p.suffix = s.substr(i);
  static const std::pair<const char*, int> kDecimal[] = {{"n", -9}, {"u", -6}, {"m", -3}, {"", 0},
                                                         {"k", 3},  {"M", 6},  {"G", 9},  {"T", 12},
                                                         {"P", 15}, {"E", 18}};
  static const std::pair<const char*, int> kBinary[] = {{"Ki", 1}, {"Mi", 2}, {"Gi", 3},
                                                        {"Ti", 4}, {"Pi", 5}, {"Ei", 6}};
  if (binary && p.suffix.empty()) {
    p.value = p.mantissa;
    p.exact = true;
    FUZZ_CHECK(p.mantissa % 1024 != 0, "a BinarySI mantissa is not a multiple of 1024");
    return p;
  }
  for (const auto& [suffix, exp10] : kDecimal) {
    if (p.suffix != suffix) continue;
    FUZZ_CHECK(!binary, "BinarySI values carry no decimal suffix");
    const int shift = exp10 - base_exponent;
    FUZZ_CHECK(shift >= 0, "no suffix below the base unit");
    p.value = p.mantissa * pow_int(10, shift);
    p.exact = true;
    if (std::string(suffix) != "E" && p.mantissa != 0) {
      FUZZ_CHECK(p.mantissa % 1000 != 0, "a DecimalSI mantissa is not a multiple of 1000");
    }
    return p;
  }
  for (const auto& [suffix, exp1024] : kBinary) {
    if (p.suffix != suffix) continue;
    FUZZ_CHECK(binary && base_exponent == 0, "binary suffixes only for BinarySI bytes");
    p.value = p.mantissa * pow_int(1024, exp1024);
    p.exact = true;
    if (std::string(suffix) != "Ei") {
      FUZZ_CHECK(p.mantissa % 1024 != 0, "a BinarySI mantissa is not a multiple of 1024");
    }
    return p;
  }
  FUZZ_CHECK(false, "the suffix is a Kubernetes quantity suffix");
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint64_t values[2] = {0, 0};
  std::memcpy(values, data, std::min(size, sizeof values));
  const uint64_t nano_cores = values[0];
  const uint64_t bytes = values[1];

  const std::string cpu = nodemeter::api::format_cpu_nanocores(nano_cores);
  const Parsed c = parse(cpu, -9, false);
  FUZZ_CHECK(c.exact && c.value == nano_cores, "CPU formats to exactly its nanocores");

  const std::string memory = nodemeter::api::format_memory_bytes(bytes);
  const Parsed m = parse(memory, 0, bytes >= 1024);
  FUZZ_CHECK(m.exact && m.value == bytes, "memory formats to exactly its bytes");
  if (bytes < 1024) {
    FUZZ_CHECK(m.suffix.empty() || m.suffix == "k", "memory under 1024 bytes is DecimalSI");
  }
  return 0;
}
