#ifndef FL_SERVER_CLIENT_TABLE_H_
#define FL_SERVER_CLIENT_TABLE_H_

// The coordinator's clients by id, in one array indexed by id: the store numbers clients
// 1, 2, 3, ... as they first join (SQLite row ids; clients are never deleted), so the
// array is dense, and a client costs its entry (a name of up to 15 characters is held
// inside the string, "client-999999" included) rather than a map node: about 40 bytes,
// a million registered clients 40 MB. Thread-compatible: the coordinator's mutex guards it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fl::internal {

class ClientTable {
 public:
  struct Client {
    std::string name;
    uint64_t last_seen_us = 0;  // 0: not heard from since this process started
  };

  // 1 if client `id` is in the table, else 0 (as std::map::count).
  size_t count(uint64_t id) const { return id > 0 && id <= present_.size() && present_[id - 1]; }
  size_t size() const { return size_; }
  // Client `id`, added (empty) if it is not in the table. REQUIRES: id > 0.
  Client& operator[](uint64_t id) {
    if (id > clients_.size()) {
      clients_.resize(id);
      present_.resize(id, false);
    }
    if (!present_[id - 1]) {
      present_[id - 1] = true;
      ++size_;
    }
    return clients_[id - 1];
  }
  // nullptr if client `id` is not in the table.
  Client* Find(uint64_t id) { return count(id) ? &clients_[id - 1] : nullptr; }
  // Room for ids up to `max_id` without moving the entries again.
  void Reserve(uint64_t max_id) {
    clients_.reserve(max_id);
    present_.reserve(max_id);
  }
  // Calls fn(id, client) for every client, by increasing id.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (size_t i = 0; i < clients_.size(); ++i) {
      if (present_[i]) fn(static_cast<uint64_t>(i + 1), clients_[i]);
    }
  }

 private:
  std::vector<Client> clients_;  // by id - 1
  std::vector<bool> present_;    // by id - 1
  size_t size_ = 0;
};

}  // namespace fl::internal

#endif  // FL_SERVER_CLIENT_TABLE_H_
