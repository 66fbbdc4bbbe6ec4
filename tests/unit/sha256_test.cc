#include "crypto/sha256.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace fl::internal {
namespace {

TEST(Sha256Test, KnownAnswers) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(HexEncode(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(HexEncode(Sha256("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HexEncode(Sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256("abc").size(), kSha256Size);
}

TEST(Sha256Test, StreamingMatchesOneShot) {
  std::string message(1000000, 'a');
  Sha256Hasher hasher;
  for (size_t pos = 0; pos < message.size(); pos += 65537) {
    hasher.Update(std::string_view(message).substr(pos, 65537));
  }
  EXPECT_EQ(HexEncode(hasher.Finish()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  // Finish resets: the hasher is reusable.
  hasher.Update("a");
  hasher.Update("");
  hasher.Update("bc");
  EXPECT_EQ(hasher.Finish(), Sha256("abc"));
}

TEST(Sha256Test, HexEncode) {
  EXPECT_EQ(HexEncode(std::string("\x00\x0f\xf0\xff", 4)), "000ff0ff");
  EXPECT_EQ(HexEncode(""), "");
}

TEST(Sha256Test, RandomHexIsFreshAndWellFormed) {
  std::set<std::string> seen;
  for (int i = 0; i < 50; ++i) {
    std::string t = RandomHex(16);
    ASSERT_EQ(t.size(), 32u);
    EXPECT_EQ(t.find_first_not_of("0123456789abcdef"), std::string::npos);
    seen.insert(t);
  }
  EXPECT_EQ(seen.size(), 50u);
}

}  // namespace
}  // namespace fl::internal
