#include "proxy/privileges.hpp"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace portcullis {
namespace {

[[noreturn]] void fail(const std::string& step) {
  throw std::runtime_error("run_as: " + step + ": " + std::strerror(errno));
}

// capget/capset without libcap: version 3 uses two 32-bit words per set.
bool capabilities(__user_cap_data_struct (&data)[2]) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  return ::syscall(SYS_capget, &header, data) == 0;
}

void clear_capabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct none[2]{};
  if (::syscall(SYS_capset, &header, none) != 0) fail("clearing capabilities");
  __user_cap_data_struct now[2]{};
  if (!capabilities(now)) fail("reading capabilities");
  for (const auto& d : now)
    if (d.effective || d.permitted || d.inheritable) {
      errno = EPERM;
      fail("capabilities remain after clearing them");
    }
}

}  // namespace

bool has_capability(int cap) {
  __user_cap_data_struct now[2]{};
  if (!capabilities(now) || cap < 0 || cap >= 64) return false;
  return (now[cap / 32].effective >> (cap % 32)) & 1u;
}

void drop_privileges(std::uint32_t uid, std::uint32_t gid) {
  uid_t ruid, euid, suid;
  gid_t rgid, egid, sgid;
  ::getresuid(&ruid, &euid, &suid);
  ::getresgid(&rgid, &egid, &sgid);
  bool already = ruid == uid && euid == uid && suid == uid && rgid == gid && egid == gid && sgid == gid;
  if (!already) {
    if (euid != 0) {
      errno = EPERM;
      fail("switching to uid " + std::to_string(uid) + " gid " + std::to_string(gid) +
           " needs root (start as root, or as that user)");
    }
    // While still privileged: no capability may come back through the bounding or ambient sets.
    for (int cap = 0; cap <= CAP_LAST_CAP; ++cap)
      if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) fail("dropping the capability bounding set");
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) fail("clearing ambient capabilities");
    gid_t groups[1] = {static_cast<gid_t>(gid)};
    if (::setgroups(1, groups) != 0) fail("setgroups");
    if (::setresgid(gid, gid, gid) != 0) fail("setresgid(" + std::to_string(gid) + ")");
    if (::setresuid(uid, uid, uid) != 0) fail("setresuid(" + std::to_string(uid) + ")");
    // Root must be unreachable now.
    if (uid != 0 && (::setresuid(0, 0, 0) == 0 || ::geteuid() == 0)) {
      errno = EPERM;
      fail("uid 0 is still reachable after the switch");
    }
  }
  clear_capabilities();
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("PR_SET_NO_NEW_PRIVS");
}

}  // namespace portcullis
