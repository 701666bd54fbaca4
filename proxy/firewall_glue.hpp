#pragma once
#include "proxy/snapshot.hpp"

namespace portcullis {
// Applies the config's firewall section before the proxy starts serving. Returns an exit code
// (0 = applied). Without CAP_NET_ADMIN it fails, naming the capability.
int apply_firewall_at_startup(const Snapshot& snap);
}  // namespace portcullis
