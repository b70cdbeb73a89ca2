/*
 * Preloaded into the tests' private pcscd instances (src/sim/pcscd.ts `preload`): sets TCP_NODELAY
 * on every socket pcscd accepts, i.e. on vpcd's connection to the virtual card.
 *
 * Why: Debian 12's vpcd (vsmartcard 3.3) writes a command's 2-byte length and its body with two
 * send() calls. Without TCP_NODELAY, Nagle holds the body until the length is acknowledged, and the
 * card side's kernel delays that ACK (~40 ms): about 115 ms per APDU on a busy 2-core machine,
 * 3.8 ms with this (measured with 50 GET DATA through opensc-tool). Nothing else changes: same
 * bytes, same pcscd, same driver. A failing setsockopt (pcscd's own Unix sockets) is ignored.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);

static void set_nodelay(int fd) {
  int saved = errno;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  errno = saved;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
  static accept_fn real;
  if (!real) real = (accept_fn)dlsym(RTLD_NEXT, "accept");
  int client = real(fd, addr, len);
  if (client >= 0) set_nodelay(client);
  return client;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
  static accept4_fn real;
  if (!real) real = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
  int client = real(fd, addr, len, flags);
  if (client >= 0) set_nodelay(client);
  return client;
}
