// Kubernetes resource.Quantity in canonical form, as clients parse it: CPU from integer nanocores
// (DecimalSI: "487558164n", "5m", "2"), memory from bytes (BinarySI: "732212Ki", "1Mi", "1500").
// Mirrors apimachinery's Quantity.CanonicalizeBytes for non-negative integers up to 2^64-1.
#pragma once

#include <cstdint>
#include <string>

namespace nodemeter::api {

// resource.NewScaledQuantity(nano_cores, resource.Nano).String()
std::string format_cpu_nanocores(uint64_t nano_cores);
// resource.NewQuantity(bytes, resource.BinarySI).String()
std::string format_memory_bytes(uint64_t bytes);

}  // namespace nodemeter::api
