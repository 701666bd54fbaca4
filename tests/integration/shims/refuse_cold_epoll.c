// LD_PRELOAD shim for tests/integration/test_proxy.py: the kernel refuses to add a socket to a
// worker's own epoll set for idle connections (proxy/net/cold_poll.cpp), as it does when the
// user's epoll watch limit (/proc/sys/fs/epoll/max_user_watches) is reached. That set is the only
// one registered level-triggered (asio registers edge-triggered, EPOLLET), so only its additions
// fail, with ENOSPC. Each refusal appends one line to the file REFUSE_COLD_EPOLL_LOG names.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

int epoll_ctl(int epfd, int op, int fd, struct epoll_event* event) {
  static int (*real)(int, int, int, struct epoll_event*);
  if (!real) real = (int (*)(int, int, int, struct epoll_event*))dlsym(RTLD_NEXT, "epoll_ctl");
  if (op == EPOLL_CTL_ADD && event && !(event->events & EPOLLET) && (event->events & EPOLLRDHUP)) {
    const char* log = getenv("REFUSE_COLD_EPOLL_LOG");
    if (log) {
      int f = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
      if (f >= 0) {
        (void)!write(f, "refused\n", 8);
        close(f);
      }
    }
    errno = ENOSPC;
    return -1;
  }
  return real(epfd, op, fd, event);
}
