#include "certs/ticket_keys.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <mutex>
#include <shared_mutex>

namespace portcullis::certs {

namespace {

using Clock = std::chrono::steady_clock;

struct TicketKey {
  std::array<unsigned char, 16> name{};
  std::array<unsigned char, 32> aes_key{};   // AES-256-CBC, as OpenSSL's own tickets use
  std::array<unsigned char, 32> hmac_key{};  // HMAC-SHA256 over the encrypted ticket
  Clock::time_point created;
};

bool generate_key(TicketKey& key, Clock::time_point now) {
  key.created = now;
  return RAND_bytes(key.name.data(), key.name.size()) == 1 &&
         RAND_priv_bytes(key.aes_key.data(), key.aes_key.size()) == 1 &&
         RAND_priv_bytes(key.hmac_key.data(), key.hmac_key.size()) == 1;
}

bool set_hmac_key(EVP_MAC_CTX* hmac, const TicketKey& key) {
  char digest_name[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key.hmac_key.data()),
                                        key.hmac_key.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
      OSSL_PARAM_construct_end(),
  };
  return EVP_MAC_CTX_set_params(hmac, params) == 1;
}

// 1 = encrypt this ticket with `key`; 0 = issue no ticket (the handshake goes on).
int start_ticket_encryption(const TicketKey& key, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                            EVP_MAC_CTX* hmac) {
  const EVP_CIPHER* aes = EVP_aes_256_cbc();
  if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(aes)) != 1) {
    return 0;
  }
  std::memcpy(key_name, key.name.data(), key.name.size());
  return EVP_EncryptInit_ex(cipher, aes, nullptr, key.aes_key.data(), iv) == 1 && set_hmac_key(hmac, key) ? 1 : 0;
}

}  // namespace

struct TicketKeyStore::State {
  mutable std::shared_mutex mutex;
  TicketKeySchedule schedule;
  std::deque<TicketKey> keys;  // front = newest, the one that encrypts
  Clock::time_point next_rotation;

  // Keys that encrypted a ticket at most `ticket_lifetime` ago must still decrypt it. The newest
  // key is always kept. Caller holds the unique lock.
  void retire_expired(Clock::time_point now) {
    while (keys.size() > 1) {
      // The second-newest stopped encrypting when the newest was created; tickets from the
      // oldest key stopped being issued when the key after it was created.
      const TicketKey& successor = keys[keys.size() - 2];
      if (now - successor.created < schedule.ticket_lifetime) {
        break;
      }
      OPENSSL_cleanse(&keys.back(), sizeof(TicketKey));
      keys.pop_back();
    }
  }

  bool rotate_locked(Clock::time_point now) {
    TicketKey key;
    if (!generate_key(key, now)) {
      return false;
    }
    keys.push_front(key);
    OPENSSL_cleanse(&key, sizeof key);
    next_rotation = now + schedule.rotation_interval;
    retire_expired(now);
    return true;
  }
};

TicketKeyStore::TicketKeyStore() : state_(new State) {}

TicketKeyStore::~TicketKeyStore() {
  for (auto& key : state_->keys) {
    OPENSSL_cleanse(&key, sizeof key);
  }
  delete state_;
}

TicketKeyStore& TicketKeyStore::process_wide() {
  // Never destroyed: SSL_CTXs freed during static destruction may still call back into it.
  static TicketKeyStore* store = new TicketKeyStore();
  return *store;
}

void TicketKeyStore::set_schedule(TicketKeySchedule schedule) {
  std::unique_lock lock(state_->mutex);
  state_->schedule = schedule;
}

TicketKeySchedule TicketKeyStore::schedule() const {
  std::shared_lock lock(state_->mutex);
  return state_->schedule;
}

void TicketKeyStore::rotate() {
  std::unique_lock lock(state_->mutex);
  state_->rotate_locked(Clock::now());
}

std::size_t TicketKeyStore::key_count() const {
  std::shared_lock lock(state_->mutex);
  return state_->keys.size();
}

// The OpenSSL callback. enc=1: fill key_name and iv, set up encryption with the newest key.
// enc=0: find the key by name; 0 = unknown (full handshake), 1 = resumed, 2 = resumed and
// re-issue the ticket under the newest key. Never throws: it runs inside a handshake.
int ticket_key_callback(SSL*, unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* hmac,
                        int enc) {
  TicketKeyStore::State& state = *TicketKeyStore::process_wide().state_;
  if (enc == 1) {
    const auto now = Clock::now();
    {
      std::shared_lock lock(state.mutex);
      if (!state.keys.empty() && now < state.next_rotation) {
        return start_ticket_encryption(state.keys.front(), key_name, iv, cipher, hmac);
      }
    }
    std::unique_lock lock(state.mutex);
    // Another thread may have rotated between the two locks.
    if ((state.keys.empty() || now >= state.next_rotation) && !state.rotate_locked(now)) {
      return 0;  // no ticket this time; the handshake itself goes on
    }
    return start_ticket_encryption(state.keys.front(), key_name, iv, cipher, hmac);
  }

  std::shared_lock lock(state.mutex);
  const auto now = Clock::now();
  for (std::size_t i = 0; i < state.keys.size(); ++i) {
    const TicketKey& key = state.keys[i];
    if (std::memcmp(key_name, key.name.data(), key.name.size()) != 0) {
      continue;
    }
    // A retired-but-not-yet-removed key (rotation happens lazily) must not resume.
    if (i > 0 && now - state.keys[i - 1].created >= state.schedule.ticket_lifetime) {
      return 0;
    }
    if (!set_hmac_key(hmac, key) ||
        EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes_key.data(), iv) != 1) {
      return 0;
    }
    const bool newest = i == 0 && now < state.next_rotation;
    return newest ? 1 : 2;
  }
  return 0;
}

void TicketKeyStore::install(SSL_CTX* ctx) {
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_callback);
  SSL_CTX_set_timeout(ctx, static_cast<long>(schedule().ticket_lifetime.count()));
}

}  // namespace portcullis::certs
