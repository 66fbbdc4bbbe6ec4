#include "server/client_table.h"

#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace fl::internal {
namespace {

TEST(ClientTableTest, HoldsClientsByIdAndVisitsThemInOrder) {
  ClientTable table;
  EXPECT_EQ(table.size(), 0u);
  EXPECT_EQ(table.count(1), 0u);
  EXPECT_EQ(table.count(0), 0u);  // 0 is "unidentified", never a client
  EXPECT_EQ(table.Find(3), nullptr);
  table[3].name = "c";
  table[1].name = "a";
  table[1].last_seen_us = 7;
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(table.count(1), 1u);
  EXPECT_EQ(table.count(2), 0u);  // a gap below the largest id is no client
  EXPECT_EQ(table.count(4), 0u);
  ASSERT_NE(table.Find(1), nullptr);
  EXPECT_EQ(table.Find(1)->last_seen_us, 7u);
  table[3].name = "c2";  // an existing client is not counted again
  EXPECT_EQ(table.size(), 2u);
  std::vector<std::pair<uint64_t, std::string>> seen;
  table.ForEach([&](uint64_t id, const ClientTable::Client& c) { seen.emplace_back(id, c.name); });
  const std::vector<std::pair<uint64_t, std::string>> expected = {{1, "a"}, {3, "c2"}};
  EXPECT_EQ(seen, expected);
}

}  // namespace
}  // namespace fl::internal
