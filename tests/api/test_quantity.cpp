// Canonical Kubernetes quantities. Expected strings follow apimachinery's CanonicalizeBytes:
// DecimalSI moves factors of ten into a multiple-of-three exponent (n, u, m, "", k, M, G);
// BinarySI takes out factors of 1024 (Ki..Ei), prints values that are not a multiple of 1024 as
// plain integers, and prints values under 1024 as DecimalSI (so 1000 bytes is "1k").
#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "api/quantity.h"

using nodemeter::api::format_cpu_nanocores;
using nodemeter::api::format_memory_bytes;

TEST_CASE("cpu nanocores in DecimalSI canonical form", "[quantity]") {
  const std::vector<std::pair<uint64_t, std::string>> cases = {
      {0, "0"},
      {1, "1n"},
      {10, "10n"},
      {100, "100n"},
      {999, "999n"},
      {1'000, "1u"},
      {1'500'000, "1500u"},
      {1'000'000, "1m"},
      {5'000'000, "5m"},
      {250'000'000, "250m"},
      {487'558'164, "487558164n"},
      {1'000'000'000, "1"},
      {1'500'000'000, "1500m"},
      {2'000'000'000, "2"},
      {12'345'678'900, "12345678900n"},
      {64'000'000'000, "64"},
      {1'000'000'000'000, "1k"},
      {10'000'000'000'000'000'000u, "10G"},
      {9'223'372'036'854'775'807u, "9223372036854775807n"},
      {18'446'744'073'709'551'615u, "18446744073709551615n"},
      {18'446'744'073'000'000'000u, "18446744073"},
  };
  for (const auto& [in, want] : cases) {
    INFO(in);
    CHECK(format_cpu_nanocores(in) == want);
  }
}

TEST_CASE("memory bytes in BinarySI canonical form", "[quantity]") {
  const std::vector<std::pair<uint64_t, std::string>> cases = {
      {0, "0"},
      {1, "1"},
      {10, "10"},
      {100, "100"},
      {999, "999"},
      {1'000, "1k"},  // under 1024: DecimalSI
      {1'020, "1020"},
      {1'023, "1023"},
      {1'024, "1Ki"},
      {1'500, "1500"},
      {1'536, "1536"},
      {2'048, "2Ki"},
      {1'000'000, "1000000"},
      {1'024'000, "1000Ki"},
      {1'048'576, "1Mi"},
      {749'785'088, "732212Ki"},
      {1'073'741'824, "1Gi"},
      {3'221'225'472, "3Gi"},
      {1'099'511'627'776, "1Ti"},
      {1'125'899'906'842'624, "1Pi"},
      {1'152'921'504'606'846'976u, "1Ei"},
      {9'223'372'036'854'775'808u, "8Ei"},
      {9'223'372'036'854'775'807u, "9223372036854775807"},
      {9'223'372'036'854'771'712u, "9007199254740988Ki"},  // v1's page-rounded "unlimited"
      {18'446'744'073'709'550'592u, "18014398509481983Ki"},
      {18'446'744'073'709'551'615u, "18446744073709551615"},
  };
  for (const auto& [in, want] : cases) {
    INFO(in);
    CHECK(format_memory_bytes(in) == want);
  }
}
