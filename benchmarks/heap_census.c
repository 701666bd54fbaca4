/* heap_census.so: live heap blocks by requested size, for comparing what two processes hold per
 * connection (benchmarks/README.md, "Idle memory").
 *
 *   gcc -O2 -shared -fPIC -o heap_census.so benchmarks/heap_census.c
 *   LD_PRELOAD=$PWD/heap_census.so portcullis run -c ...   (or nginx with master_process off)
 *   kill -s SIGRTMIN+3 PID   # before the connections: writes /tmp/heap_census.PID.0
 *   ... open and hold N connections ...
 *   kill -s SIGRTMIN+3 PID   # while held: /tmp/heap_census.PID.1; diff the two, divide by N
 *
 * Each line of a dump is "requested_size live_blocks" (sizes of 65,535 and over are counted at
 * 65,535). A measuring tool, not part of the product: one lock around a fixed table of 8M
 * entries, and the dump runs in the signal handler (allocation-free until fopen), so send the
 * signal while the process is not allocating heavily.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define CAP (1u << 23)
#define TOMBSTONE ((uintptr_t)1)
#define MAX_SIZE 65535
static uintptr_t keys[CAP];
static uint32_t sizes[CAP];
static atomic_flag lock = ATOMIC_FLAG_INIT;
static int dumps;

static uint32_t slot(uintptr_t p) {
  p ^= p >> 17;
  p *= 0x9E3779B97F4A7C15ull;
  return (uint32_t)(p >> 40) & (CAP - 1);
}
static void take(void) { while (atomic_flag_test_and_set(&lock)) {} }
static void give(void) { atomic_flag_clear(&lock); }

static void add(void *p, size_t n) {
  if (!p) return;
  take();
  uint32_t i = slot((uintptr_t)p);
  while (keys[i] > TOMBSTONE) i = (i + 1) & (CAP - 1);
  keys[i] = (uintptr_t)p;
  sizes[i] = n > MAX_SIZE ? MAX_SIZE : (uint32_t)n;
  give();
}
static void drop(void *p) {
  if (!p) return;
  take();
  for (uint32_t i = slot((uintptr_t)p); keys[i]; i = (i + 1) & (CAP - 1)) {
    if (keys[i] == (uintptr_t)p) {
      keys[i] = TOMBSTONE;
      break;
    }
  }
  give();
}

void *malloc(size_t n) { void *p = __libc_malloc(n); add(p, n); return p; }
void free(void *p) { drop(p); __libc_free(p); }
void *calloc(size_t a, size_t b) { void *p = __libc_calloc(a, b); add(p, a * b); return p; }
void *realloc(void *o, size_t n) {
  drop(o);
  void *p = __libc_realloc(o, n);
  if (p) add(p, n);
  else if (o && n) add(o, n);  /* failed: the old block is still live */
  return p;
}
int posix_memalign(void **r, size_t a, size_t n) {
  void *p = __libc_memalign(a, n);
  if (!p) return 12;
  add(p, n);
  *r = p;
  return 0;
}
void *memalign(size_t a, size_t n) { void *p = __libc_memalign(a, n); add(p, n); return p; }
void *aligned_alloc(size_t a, size_t n) { void *p = __libc_memalign(a, n); add(p, n); return p; }

static void dump(int sig) {
  (void)sig;
  static uint32_t histogram[MAX_SIZE + 1];
  memset(histogram, 0, sizeof histogram);
  take();
  for (uint32_t i = 0; i < CAP; i++)
    if (keys[i] > TOMBSTONE) histogram[sizes[i]]++;
  give();
  char path[64];
  snprintf(path, sizeof path, "/tmp/heap_census.%d.%d", (int)getpid(), dumps++);
  FILE *f = fopen(path, "w");
  if (!f) return;
  for (int i = 0; i <= MAX_SIZE; i++)
    if (histogram[i]) fprintf(f, "%d %u\n", i, histogram[i]);
  fclose(f);
}

__attribute__((constructor)) static void install(void) { signal(SIGRTMIN + 3, dump); }
