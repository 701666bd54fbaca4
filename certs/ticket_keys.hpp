#pragma once
// Session-ticket keys for TLS resumption (1.2 tickets and 1.3 stateless PSK tickets).
//
// ONE store per process, shared by every server SSL_CTX that make_server_context() builds, so a
// ticket issued before a certificate rotation (a new SSL_CTX) still resumes after it. Keys rotate
// on a schedule: the newest key encrypts new tickets, older keys only decrypt (and a ticket
// decrypted with an older key is re-issued under the newest), and a key is dropped once no
// ticket it encrypted can still be valid. Keys live only in memory: a restart forgets them,
// which costs one full handshake per client.
#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>

namespace portcullis::certs {

struct TicketKeySchedule {
  std::chrono::seconds rotation_interval{std::chrono::hours(1)};
  std::chrono::seconds ticket_lifetime{std::chrono::hours(2)};  // also the SSL_CTX session timeout
};

class TicketKeyStore {
 public:
  // The store every server context uses. The first call creates it with the default schedule.
  static TicketKeyStore& process_wide();

  // Replaces the schedule (takes effect at the next rotation). Call at startup, before serving.
  void set_schedule(TicketKeySchedule schedule);
  TicketKeySchedule schedule() const;

  // Starts encrypting with a fresh key now; older keys keep decrypting until they retire.
  // Rotation also happens by itself when rotation_interval has passed (checked whenever a ticket
  // is issued), so nobody has to call this on a timer.
  void rotate();

  // How many keys are held (the encrypting one plus those that still decrypt).
  std::size_t key_count() const;

  // Points ctx's ticket callback at this store and sets its session timeout to ticket_lifetime.
  void install(SSL_CTX* ctx);

  TicketKeyStore(const TicketKeyStore&) = delete;
  TicketKeyStore& operator=(const TicketKeyStore&) = delete;
  ~TicketKeyStore();

 private:
  TicketKeyStore();
  struct State;
  State* state_;
  friend int ticket_key_callback(SSL*, unsigned char*, unsigned char*, EVP_CIPHER_CTX*, EVP_MAC_CTX*, int);
};

}  // namespace portcullis::certs
