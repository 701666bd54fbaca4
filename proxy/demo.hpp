#pragma once
namespace portcullis {
// `portcullis demo`: throwaway certs, a built-in echo upstream and the proxy on loopback, a few
// allowed and denied requests sent by its own client, and what happened. Returns the exit code.
int run_demo();
}  // namespace portcullis
