#pragma once
// Dropping root after startup (`run_as`, CONFIG.md): the listeners are bound and the firewall is
// applied first, then the process becomes uid/gid with no capability at all.
#include <cstdint>
#include <string>

namespace portcullis {

// setgroups({gid}), setresgid, setresuid (real, effective and saved), every capability set
// cleared (bounding, ambient, inheritable, permitted, effective) and PR_SET_NO_NEW_PRIVS, so no
// later exec can regain privilege. Already running as exactly uid/gid (started unprivileged):
// only the last two steps. Throws std::runtime_error naming the step that failed.
void drop_privileges(std::uint32_t uid, std::uint32_t gid);

// Is `cap` (CAP_NET_ADMIN, ...) in this process's effective set?
bool has_capability(int cap);

}  // namespace portcullis
