// portcullis-firewall-bench: our one-batch netlink apply against `nft -f` of the same text, in the
// same run, inside a fresh network namespace (needs root). Prints times and ratios (nft / ours).
//   1. full apply of a table with N CIDR elements (default 100,000), into an empty namespace
//   2. the same apply replacing an installed table (what `portcullis run` does on restart)
//   3. an element diff of D changes (default 1,000: D/2 removed, D/2 added) on the installed table
// Usage: portcullis-firewall-bench [--elements N] [--diff D] [--rounds R] [--nft-limit SECONDS]
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "firewall/netlink.hpp"
#include "firewall/ruleset.hpp"

namespace fw = portcullis::firewall;
using Clock = std::chrono::steady_clock;

namespace {

std::string cidr(std::uint32_t i) {  // every other /24 from 1.0.0.0: never adjacent, never merged
  const std::uint32_t a = (1u << 24) + i * 512;
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." + std::to_string((a >> 8) & 255) +
         ".0/24";
}

fw::Spec spec_with(std::uint32_t first, std::uint32_t count) {
  fw::Spec s;
  s.table = "portcullis_bench";
  s.has_ingress = true;
  fw::AllowEntry e;
  for (std::uint32_t i = first; i < first + count; ++i) e.cidrs.push_back(cidr(i));
  s.ingress_allow.push_back(std::move(e));
  s.ingress_allow.push_back({{"10.0.0.0/8"}, {8080, 8443}, "tcp"});
  return s;
}

int sh(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

// The kernel frees a replaced table in deferred work; let it finish so that it is not billed to
// whichever transaction comes next.
void settle() { usleep(300 * 1000); }

double seconds(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void must(const fw::ApplyResult& r, const char* what) {
  if (!r.ok()) {
    std::cerr << "firewall_bench: " << what << ": " << r.message << "\n";
    std::exit(2);
  }
}

// Runs `nft -f file`; nft is killed after `limit` seconds (a transaction that never committed
// changes nothing) and the limit is returned, marked so the report says "more than".
double time_nft(const std::string& file, double limit, bool& capped) {
  const auto t = Clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    execlp("nft", "nft", "-f", file.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (seconds(t) > limit) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      capped = true;
      return limit;
    }
    usleep(2000);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::cerr << "firewall_bench: nft -f " << file << " failed\n";
    std::exit(2);
  }
  return seconds(t);
}

}  // namespace

int main(int argc, char** argv) {
  std::uint32_t n = 100000, d = 1000, rounds = 3;
  double limit = 120;  // seconds one `nft -f` may take before it is stopped
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const auto v = static_cast<std::uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
    if (a == "--elements") n = v;
    else if (a == "--diff") d = v;
    else if (a == "--rounds") rounds = std::max(1u, v);
    else if (a == "--nft-limit") limit = std::max(1u, v);
  }
  if (unshare(CLONE_NEWNET) != 0) {
    std::perror("firewall_bench: unshare(CLONE_NEWNET) (run as root)");
    return 2;
  }
  const fw::Ruleset base = fw::build_ruleset(spec_with(0, n));
  // The diff: the first d/2 CIDRs go, d/2 new ones come.
  const fw::Ruleset next = fw::build_ruleset(spec_with(d / 2, n));
  const std::string dir = "/tmp/portcullis-fwbench-" + std::to_string(getpid());
  sh("mkdir -p " + dir);
  const std::string full = dir + "/full.nft", diff = dir + "/diff.nft";
  std::ofstream(full) << fw::render_nft(base);
  {
    std::ofstream out(diff);
    out << "delete element inet " << base.table << " ingress_v4_tcp {";
    for (std::uint32_t i = 0; i < d / 2; ++i) out << (i ? ", " : " ") << cidr(i);
    out << " }\nadd element inet " << base.table << " ingress_v4_tcp {";
    for (std::uint32_t i = 0; i < d / 2; ++i) out << (i ? ", " : " ") << cidr(n + i);
    out << " }\n";
  }

  bool capped[3] = {false, false, false};
  std::vector<double> nft_cold, ours_cold, nft_warm, ours_warm, nft_diff, ours_diff;
  fw::ApplyResult last;
  for (std::uint32_t r = 0; r < rounds; ++r) {
    must(fw::delete_table(base.table), "delete");
    settle();
    nft_cold.push_back(time_nft(full, limit, capped[0]));
    must(fw::delete_table(base.table), "delete");
    settle();
    auto t = Clock::now();
    last = fw::apply(base);
    must(last, "apply");
    ours_cold.push_back(seconds(t));

    settle();
    nft_warm.push_back(time_nft(full, limit, capped[1]));  // replaces the installed table
    settle();
    t = Clock::now();
    must(fw::apply(base), "re-apply");
    ours_warm.push_back(seconds(t));

  }
  // Element diffs: ours every round; nft's only while it finishes within the limit.
  for (std::uint32_t r = 0; r < rounds; ++r) {
    settle();
    if (!capped[2]) nft_diff.push_back(time_nft(diff, limit, capped[2]));
    must(fw::apply(base), "reset");
    settle();
    const auto t = Clock::now();
    must(fw::update(base, next), "update");
    ours_diff.push_back(seconds(t));
    must(fw::apply(base), "reset");
  }
  must(fw::delete_table(base.table), "delete");
  sh("rm -rf " + dir);

  std::printf("firewall apply: %u CIDR elements (+2 per-port), diff of %u elements, %u rounds, median; "
              "one batch = %zu netlink messages, %zu bytes\n",
              n, d, rounds, last.messages, last.bytes);
  std::printf("%-34s %12s %12s %8s\n", "case", "nft -f (s)", "ours (s)", "ratio");
  auto row = [](const char* name, const std::vector<double>& a, const std::vector<double>& b, bool cap) {
    const double x = median(a), y = median(b);
    std::printf("%-34s %s%11.4f %12.4f %s%6.1fx%s\n", name, cap ? ">" : " ", x, y, cap ? ">" : " ", x / y,
                cap ? "  (nft stopped at the limit)" : "");
  };
  row("full apply, empty namespace", nft_cold, ours_cold, capped[0]);
  row("full apply, replacing the table", nft_warm, ours_warm, capped[1]);
  row("element diff on installed table", nft_diff, ours_diff, capped[2]);
  return 0;
}
