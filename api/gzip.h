// gzip for HTTP responses: zlib's deflate with a gzip wrapper, and the Accept-Encoding test that
// decides whether a client may receive it.
#pragma once

#include <string>
#include <string_view>

namespace nodemeter::api {

// A complete gzip member (RFC 1952) holding `input`. Level 1 is the fastest and, for metric text,
// already shrinks it several times. Throws std::bad_alloc when zlib cannot get memory and
// std::invalid_argument for a level outside 0..9.
std::string gzip_compress(std::string_view input, int level = 1);

// Whether an Accept-Encoding value (several header lines joined with ", ") allows gzip: an explicit
// `gzip` (or `x-gzip`) with a q-value above zero, or else `*` with a q-value above zero. A
// malformed q-value counts as zero, so in doubt the body is sent as it is. Never throws.
bool accepts_gzip(std::string_view accept_encoding);

}  // namespace nodemeter::api
