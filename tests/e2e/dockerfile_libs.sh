#!/usr/bin/env bash
# deploy/docker/Dockerfile's runtime stage must carry exactly the shared libraries the binary links.
# No Docker engine runs here, so this test reads the Dockerfile instead of an image:
#  - the runtime stage is FROM scratch (or distroless), runs no RUN (it has no shell), copies no shell or
#    package manager, starts the binary in exec form and runs as a numeric non-root USER;
#  - the libraries it copies are exactly `ldd $NODEMETER_BINARY` (both ways, compared by the file they
#    resolve to), the loader goes where the binary's PT_INTERP says, the libraries to a directory the
#    loader searches by default;
#  - as root, a root file system is assembled from the runtime stage's COPY lines (host files stand in
#    for the build stage's: this host is Debian 12 too) and the binary is started in it by chroot as the
#    image's USER: the loader must find every library there.
# The build stage must be Debian 12 and install scripts/deps.sh's build list.
# `check && pass ... || fail ...` is safe here: pass always succeeds.
# shellcheck disable=SC2015
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_dir="${NODEMETER_SOURCE_DIR:-$(cd "$here/../.." && pwd)}"
dockerfile="$source_dir/deploy/docker/Dockerfile"
binary="${NODEMETER_BINARY:-$source_dir/build/nodemeter}"

failures=0
passed=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; passed=$((passed + 1)); }

[ -f "$dockerfile" ] || { echo "FAIL: no $dockerfile"; exit 1; }
[ -x "$binary" ] || { echo "FAIL: no built binary at $binary (set NODEMETER_BINARY)"; exit 1; }
for tool in ldd readelf realpath; do
  command -v "$tool" >/dev/null || { echo "skipped: $tool is not installed (binutils, libc-bin, coreutils)"; exit 77; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The Dockerfile as instructions: continuation lines joined, comments and blank lines dropped, one
# instruction per line, each prefixed with the number of its stage (0 = the first FROM).
awk '
  /^[[:space:]]*#/ && !cont { next }
  {
    line = $0
    if (sub(/\\[[:space:]]*$/, "", line)) { buf = buf line " "; cont = 1; next }
    buf = buf line; cont = 0
    gsub(/[[:space:]]+/, " ", buf); sub(/^ /, "", buf); sub(/ $/, "", buf)
    if (buf != "") {
      if (toupper(substr(buf, 1, 5)) == "FROM ") stage++
      print stage - 1 "\t" buf
    }
    buf = ""
  }
' "$dockerfile" >"$work/instructions"

last_stage="$(cut -f1 "$work/instructions" | sort -n | tail -1)"
[ "$last_stage" -ge 1 ] && pass "the Dockerfile is multi-stage ($((last_stage + 1)) stages)" ||
  fail "the Dockerfile is not multi-stage"
grep -P '^[0-9]+\t' "$work/instructions" | awk -F'\t' -v s="$last_stage" '$1 == s { print $2 }' >"$work/runtime"
awk -F'\t' -v s="$last_stage" '$1 != s { print $2 }' "$work/instructions" >"$work/build"

# The build stage(s).
grep -qE '^FROM debian:12(-slim)?([@ ]|$)' "$work/build" && pass "the build stage is FROM debian:12" ||
  fail "the build stage is not FROM debian:12"
grep -qE '^RUN (bash )?(\./)?scripts/deps\.sh build( |$)' "$work/build" &&
  pass "the build stage installs scripts/deps.sh's build list" ||
  fail "the build stage does not run scripts/deps.sh build"
grep -qE '^RUN .*cmake --build .*--target nodemeter' "$work/build" && pass "the build stage builds nodemeter with cmake" ||
  fail "the build stage does not build nodemeter with cmake"

# The runtime stage.
from="$(head -1 "$work/runtime" | cut -d' ' -f2)"
case "$from" in
  scratch | gcr.io/distroless/cc* | gcr.io/distroless/base-nossl* | gcr.io/distroless/static*)
    pass "the runtime stage is FROM $from (no shell, no package manager)" ;;
  *) fail "the runtime stage is FROM $from, not scratch or distroless" ;;
esac
if grep -qE '^RUN ' "$work/runtime"; then fail "the runtime stage has RUN instructions (it must have no shell)"; else
  pass "the runtime stage runs nothing"; fi
user="$(grep -E '^USER ' "$work/runtime" | tail -1 | cut -d' ' -f2)"
uid="${user%%:*}"
if [[ "$user" =~ ^[0-9]+(:[0-9]+)?$ ]] && [ "$uid" -ne 0 ]; then pass "the runtime stage runs as numeric non-root USER $user"; else
  fail "the runtime stage's USER is '${user:-none}', not a numeric non-root user"; fi
if grep -qE '^ENTRYPOINT \[ ?"/' "$work/runtime"; then pass "ENTRYPOINT is exec form (no shell needed)"; else
  fail "ENTRYPOINT is not in exec form"; fi

# Every COPY of the runtime stage: "source<TAB>destination", destination resolved for directories.
grep -E '^COPY ' "$work/runtime" | while read -r -a words; do
  args=()
  for w in "${words[@]:1}"; do [[ "$w" == --* ]] || args+=("$w"); done
  dest="${args[-1]}"
  for src in "${args[@]:0:${#args[@]}-1}"; do
    if [[ "$dest" == */ ]]; then printf '%s\t%s%s\n' "$src" "$dest" "$(basename "$src")"; else
      printf '%s\t%s\n' "$src" "$dest"; fi
  done
done >"$work/copies"
grep -qE '^COPY ' "$work/runtime" && grep -E '^COPY ' "$work/runtime" | grep -vq -- '--from=' &&
  fail "the runtime stage copies from the build context (only --from=build artifacts belong there)"

# Nothing that is a shell, a package manager or a general tool.
if grep -qE '(^|/)(s?bin|libexec)/|(^|/)(sh|bash|dash|busybox|apt|apt-get|dpkg|ldconfig)($|\t)' "$work/copies"; then
  fail "the runtime stage copies a shell, tool or package manager: $(grep -E '(^|/)(s?bin|libexec)/' "$work/copies" | cut -f1 | tr '\n' ' ')"
else
  pass "the runtime stage copies no shell and no package manager"
fi

# The libraries ldd resolves for the built binary, and the loader.
if ! ldd "$binary" >"$work/ldd" 2>&1; then fail "ldd $binary failed: $(cat "$work/ldd")"; fi
if grep -q 'not found' "$work/ldd"; then fail "ldd finds no file for: $(grep 'not found' "$work/ldd" | tr -s ' \t' ' ')"; fi
if grep -qE 'lib(a|ub|t|l)san' "$work/ldd"; then
  echo "skipped: $binary is a sanitizer build (it links $(grep -oE 'lib(a|ub|t|l)san[^ ]*' "$work/ldd" | tr '\n' ' '));" \
    "the image is built without sanitizers, so its library list cannot be compared with this binary"
  exit 77
fi
awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' "$work/ldd" | sort -u >"$work/ldd.paths"
interp="$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
[ -n "$interp" ] || fail "the binary names no program interpreter (is it static?)"
grep -qxF "$interp" "$work/ldd.paths" || echo "$interp" >>"$work/ldd.paths"

# Compare by the file each path resolves to (/lib is /usr/lib on merged-/usr Debian).
is_lib() { [[ "$(basename "$1")" =~ \.so(\.[0-9]+)*$ ]]; }
: >"$work/image.real"
while IFS=$'\t' read -r src dest; do
  is_lib "$src" || continue
  real="$(realpath -e "$src" 2>/dev/null || echo "missing:$src")"
  printf '%s\t%s\t%s\n' "$real" "$src" "$dest" >>"$work/image.real"
done <"$work/copies"
: >"$work/ldd.real"
while read -r path; do
  printf '%s\t%s\n' "$(realpath -e "$path")" "$path" >>"$work/ldd.real"
done <"$work/ldd.paths"

missing=()
while IFS=$'\t' read -r real path; do
  grep -qP "^\Q$real\E\t" "$work/image.real" || missing+=("$path")
done <"$work/ldd.real"
extra=()
while IFS=$'\t' read -r real src _; do
  grep -qP "^\Q$real\E\t" "$work/ldd.real" || extra+=("$src")
done <"$work/image.real"
if [ ${#missing[@]} -eq 0 ]; then pass "every library ldd lists ($(wc -l <"$work/ldd.real")) is in the runtime stage"; else
  fail "the runtime stage lacks what the binary links: ${missing[*]}"; fi
if [ ${#extra[@]} -eq 0 ]; then pass "the runtime stage carries no library the binary does not link"; else
  fail "the runtime stage carries libraries the binary does not link: ${extra[*]}"; fi
if [ ${#missing[@]} -ne 0 ] || [ ${#extra[@]} -ne 0 ]; then
  echo "  ldd $binary:"
  sed 's/^/    /' "$work/ldd"
fi

# Where they go: the loader at PT_INTERP, each library under its own name (its soname, as ldd shows it)
# in a directory that Debian's loader searches without an ld.so.cache.
grep -qP "\t\Q$interp\E$" "$work/image.real" && pass "the loader is copied to $interp" ||
  fail "the loader is not copied to the binary's interpreter path $interp"
while IFS=$'\t' read -r real src dest; do
  [ "$dest" = "$interp" ] && continue
  case "$(dirname "$dest")" in
    /lib/x86_64-linux-gnu | /usr/lib/x86_64-linux-gnu | /lib | /usr/lib) ;;
    *) fail "$src goes to $dest, outside the loader's default search path" ;;
  esac
  [ "$(basename "$dest")" = "$(basename "$src")" ] || fail "$src is renamed to $dest"
done <"$work/image.real"

# The binary itself.
grep -qP '\t/nodemeter$' "$work/copies" && grep -qE '^ENTRYPOINT \[ ?"/nodemeter"' "$work/runtime" &&
  pass "the binary is /nodemeter and is the entrypoint" || fail "the runtime stage does not run /nodemeter"

# Run it in a root file system made of exactly the runtime stage's files.
if [ "$(id -u)" -ne 0 ] || ! command -v chroot >/dev/null; then
  echo "note: not root (or no chroot): the binary is not started in an assembled root file system"
else
  rootfs="$work/rootfs"
  mkdir -p "$rootfs"
  while IFS=$'\t' read -r src dest; do
    mkdir -p "$rootfs$(dirname "$dest")"
    case "$src" in
      /build/nodemeter) cp "$binary" "$rootfs$dest" ;;
      /rootfs/*) ;; # written by the build stage's RUN (passwd, group): not host files
      *) cp -L "$src" "$rootfs$dest" ;;
    esac
  done <"$work/copies"
  spec="$user"
  [[ "$spec" == *:* ]] || spec="$spec:$spec"
  if chroot --userspec="$spec" "$rootfs" "$interp" --list /nodemeter >"$work/list" 2>&1 &&
    ! grep -q 'not found' "$work/list"; then
    pass "in the image's files alone, the loader resolves every library as user $spec"
  else
    fail "in the image's files alone, the loader cannot load /nodemeter: $(cat "$work/list")"
  fi
  set +e
  chroot --userspec="$spec" "$rootfs" /nodemeter --version >"$work/run" 2>&1
  rc=$?
  set -e
  if [ $rc -ne 127 ] && [ $rc -ne 126 ] && ! grep -q 'error while loading shared libraries' "$work/run"; then
    pass "/nodemeter --version starts in the image's files alone (exit $rc)"
  else
    fail "/nodemeter does not start in the image's files alone (exit $rc): $(cat "$work/run")"
  fi
fi

echo "dockerfile_libs: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
