/* memhog: holds a known amount of anonymous memory inside the VM test's cgroups.
 *
 *   memhog MIB [READY_FILE]
 *
 * Maps MIB MiB of private anonymous memory, writes every page (with non-zero, page-varying bytes,
 * so neither the zero page nor a trivially compressible swap page stands in for it), creates
 * READY_FILE once every page is touched, and then sleeps until killed. Built with `gcc -static` by
 * the VM harness: busybox has no allocator a test could use to hold anonymous memory. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: memhog MIB [READY_FILE]\n");
    return 2;
  }
  char* end = NULL;
  errno = 0;
  unsigned long mib = strtoul(argv[1], &end, 10);
  if (errno != 0 || end == argv[1] || *end != '\0' || mib == 0 || mib > 65536) {
    fprintf(stderr, "memhog: MIB must be a whole number from 1 to 65536, not '%s'\n", argv[1]);
    return 2;
  }
  size_t bytes = (size_t)mib << 20;
  unsigned char* mem =
      mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    fprintf(stderr, "memhog: mmap of %lu MiB failed: %s\n", mib, strerror(errno));
    return 1;
  }
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0) page = 4096;
  unsigned long seed = 0x9e3779b97f4a7c15UL;
  for (size_t off = 0; off < bytes; off += (size_t)page) {
    /* A few varying words per page are enough to make every page distinct. */
    for (size_t w = 0; w < (size_t)page; w += 64) {
      seed = seed * 6364136223846793005UL + 1442695040888963407UL;
      memcpy(mem + off + w, &seed, sizeof seed);
    }
  }
  if (argc == 3) {
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
      fprintf(stderr, "memhog: cannot create %s: %s\n", argv[2], strerror(errno));
      return 1;
    }
    close(fd);
  }
  for (;;)
    pause();
}
