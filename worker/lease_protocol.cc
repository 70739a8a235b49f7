#include "worker/lease_protocol.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "common/check.h"

namespace cnx::worker {

int64_t LeaseCursor::used_of(size_t i, int64_t upto) const {
  if (i >= items.size()) return 0;
  int64_t before = 0;
  for (size_t k = 0; k < i; ++k) before += items[k].end - items[k].start;
  return std::clamp<int64_t>(upto - before, 0, items[i].end - items[i].start);
}

LeaseProgress LeaseCursor::progress() const {
  LeaseProgress p;
  p.epoch = epoch;
  int64_t before = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const int64_t size = items[i].end - items[i].start;
    if (consumed >= before + size) {  // used up
      p.next_position = static_cast<int64_t>(i) + 1;
      before += size;
      continue;
    }
    const int64_t used = consumed - before;
    if (used > 0) {
      p.next_position = static_cast<int64_t>(i) + 1;
      p.partial.push_back({static_cast<int64_t>(i), used});
    }
    break;
  }
  return p;
}

std::string LeaseCursor::to_string() const {
  nlohmann::json items_json = nlohmann::json::array();
  for (const Item& it : items) items_json.push_back({it.shard, it.start, it.end});
  nlohmann::json j{{"kind", "leases"},     {"epoch", epoch},         {"items", items_json},
                   {"consumed", consumed}, {"delivered", delivered}, {"batches", batches}};
  return j.dump();
}

bool LeaseCursor::is_lease_cursor(const std::string& s) {
  try {
    const auto j = nlohmann::json::parse(s);
    return j.is_object() && j.value("kind", "") == "leases";
  } catch (const nlohmann::json::exception&) {
    return false;
  }
}

LeaseCursor LeaseCursor::from_string(const std::string& s) {
  LeaseCursor c;
  try {
    const auto j = nlohmann::json::parse(s);
    if (!j.is_object() || j.value("kind", "") != "leases") throw std::invalid_argument("\"kind\" is not \"leases\"");
    c.epoch = j.at("epoch").get<int64_t>();
    c.consumed = j.at("consumed").get<int64_t>();
    c.delivered = j.at("delivered").get<int64_t>();
    c.batches = j.at("batches").get<int64_t>();
    int64_t total = 0;
    for (const auto& it : j.at("items")) {
      if (!it.is_array() || it.size() != 3) throw std::invalid_argument("an item is not [shard, start, end]");
      Item item{it[0].get<int64_t>(), it[1].get<int64_t>(), it[2].get<int64_t>()};
      if (item.shard < 0 || item.start < 0 || item.end < item.start)
        throw std::invalid_argument(str("item [", item.shard, ", ", item.start, ", ", item.end, ") is malformed"));
      total += item.end - item.start;
      c.items.push_back(item);
    }
    if (c.epoch < 0 || c.consumed < 0 || c.consumed > total || c.delivered < 0 || c.delivered > c.consumed ||
        c.batches < 0)
      throw std::invalid_argument(str("positions out of range (epoch ", c.epoch, ", consumed ", c.consumed, " of ",
                                      total, ", delivered ", c.delivered, ", batches ", c.batches, ")"));
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(str("not a lease cursor: ", e.what()));
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(str("not a lease cursor: ", e.what()));
  }
  return c;
}

}  // namespace cnx::worker
