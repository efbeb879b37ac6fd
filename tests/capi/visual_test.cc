// The visual pruning C ABI (attnkit_visual.h): creation, selection of one, several and ragged
// images, the result accessors, the prompt-position helper, and argument checking.
#include <ATen/Functions.h>
#include <ATen/TensorOperators.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "attnkit/attnkit_config.h"
#include "attnkit/attnkit_visual.h"
#include "dlpack_util.h"

namespace {

using attnkit::testing::DLView;
using Indices = std::vector<int64_t>;

// Takes ownership of a status: its code, message, and freed.
struct Status {
  explicit Status(attnkit_status* s)
      : code(attnkit_status_get_code(s)), message(attnkit_status_get_message(s)) {
    attnkit_status_free(s);
  }
  attnkit_status_code code;
  std::string message;
};

attnkit_visual_pruner* FromText(const std::string& text) {
  attnkit_visual_pruner* p = nullptr;
  Status s(attnkit_visual_pruner_create_from_text(text.data(), text.size(), &p));
  EXPECT_EQ(s.code, ATTNKIT_OK) << s.message;
  return p;
}

Indices Kept(const attnkit_visual_selection* sel, size_t image) {
  const int64_t* data = attnkit_visual_selection_indices(sel, image);
  const size_t n = attnkit_visual_selection_num_kept(sel, image);
  return data == nullptr ? Indices{} : Indices(data, data + n);
}

TEST(CapiVisual, CreateFromBytesAndTextAgree) {
  const std::string text = "method: CDPRUNER num_keep_tokens: 5 theta: 0.5";
  attnkit_buffer* bytes = nullptr;
  ASSERT_EQ(attnkit_config_text_to_binary(ATTNKIT_CONFIG_VISUAL_PRUNING, text.data(), text.size(),
                                          &bytes),
            nullptr);
  attnkit_visual_pruner* a = nullptr;
  Status s(attnkit_visual_pruner_create(bytes->data, bytes->size, &a));
  ASSERT_EQ(s.code, ATTNKIT_OK) << s.message;
  attnkit_buffer_free(bytes);
  attnkit_visual_pruner* b = FromText(text);

  at::manual_seed(1);
  at::Tensor e = at::randn({40, 16}), f = at::randn({40, 64}), t = at::randn({3, 16});
  DLView ev(e), fv(f), tv(t);
  attnkit_visual_selection *sa = nullptr, *sb = nullptr;
  ASSERT_EQ(attnkit_visual_pruner_select(a, ev, fv, tv, &sa), nullptr);
  ASSERT_EQ(attnkit_visual_pruner_select(b, ev, fv, tv, &sb), nullptr);
  EXPECT_EQ(attnkit_visual_selection_num_images(sa), 1u);
  EXPECT_EQ(attnkit_visual_selection_image_size(sa, 0), 40u);
  EXPECT_EQ(Kept(sa, 0).size(), 5u);
  EXPECT_EQ(Kept(sa, 0), Kept(sb, 0));
  attnkit_visual_selection_free(sa);
  attnkit_visual_selection_free(sb);
  attnkit_visual_pruner_free(a);
  attnkit_visual_pruner_free(b);
}

TEST(CapiVisual, BadConfigsAreInvalidArgumentNamingTheField) {
  attnkit_visual_pruner* p = reinterpret_cast<attnkit_visual_pruner*>(1);
  const std::string no_budget = "method: CDPRUNER";
  Status s(attnkit_visual_pruner_create_from_text(no_budget.data(), no_budget.size(), &p));
  EXPECT_EQ(s.code, ATTNKIT_INVALID_ARGUMENT);
  EXPECT_NE(s.message.find("num_keep_tokens"), std::string::npos) << s.message;
  EXPECT_EQ(p, nullptr);
  const std::string theta = "num_keep_tokens: 3 theta: 2";
  Status s2(attnkit_visual_pruner_create_from_text(theta.data(), theta.size(), &p));
  EXPECT_NE(s2.message.find("theta"), std::string::npos) << s2.message;
  const std::string garbage = "num_keep_tokens: [";
  Status s3(attnkit_visual_pruner_create_from_text(garbage.data(), garbage.size(), &p));
  EXPECT_EQ(s3.code, ATTNKIT_INVALID_ARGUMENT);
  const char junk[] = {'\x08', '\x96', '\x01', '\x7f'};
  Status s4(attnkit_visual_pruner_create(junk, sizeof(junk), &p));
  EXPECT_EQ(s4.code, ATTNKIT_INVALID_ARGUMENT);
  Status s5(attnkit_visual_pruner_create(nullptr, 4, &p));
  EXPECT_NE(s5.message.find("data"), std::string::npos);
  Status s6(attnkit_visual_pruner_create(nullptr, 0, nullptr));
  EXPECT_NE(s6.message.find("out"), std::string::npos);
}

TEST(CapiVisual, FreeNullIsNoOp) {
  attnkit_visual_pruner_free(nullptr);
  attnkit_visual_selection_free(nullptr);
  EXPECT_EQ(attnkit_visual_selection_num_images(nullptr), 0u);
  EXPECT_EQ(attnkit_visual_selection_num_kept(nullptr, 0), 0u);
  EXPECT_EQ(attnkit_visual_selection_indices(nullptr, 0), nullptr);
}

TEST(CapiVisual, BatchedImagesEqualOneByOne) {
  attnkit_visual_pruner* p = FromText("num_keep_tokens: 6");
  at::manual_seed(2);
  at::Tensor e = at::randn({3, 30, 16}), f = at::randn({3, 30, 48}), t = at::randn({2, 16});
  DLView ev(e), fv(f), tv(t);
  attnkit_visual_selection* batch = nullptr;
  ASSERT_EQ(attnkit_visual_pruner_select(p, ev, fv, tv, &batch), nullptr);
  ASSERT_EQ(attnkit_visual_selection_num_images(batch), 3u);
  for (int64_t i = 0; i < 3; ++i) {
    at::Tensor ei = e[i], fi = f[i];
    DLView eiv(ei), fiv(fi);
    attnkit_visual_selection* one = nullptr;
    ASSERT_EQ(attnkit_visual_pruner_select(p, eiv, fiv, tv, &one), nullptr);
    EXPECT_EQ(Kept(batch, i), Kept(one, 0));
    attnkit_visual_selection_free(one);
  }
  EXPECT_EQ(attnkit_visual_selection_indices(batch, 3), nullptr);
  EXPECT_EQ(attnkit_visual_selection_num_kept(batch, 3), 0u);
  attnkit_visual_selection_free(batch);
  attnkit_visual_pruner_free(p);
}

TEST(CapiVisual, RaggedImagesAndPromptPositions) {
  attnkit_visual_pruner* p = FromText("num_keep_tokens: 2");
  at::manual_seed(3);
  const int64_t sizes[] = {5, 3};
  at::Tensor e = at::randn({8, 8}), f = at::randn({8, 16}), t = at::randn({1, 8});
  DLView ev(e), fv(f), tv(t);
  attnkit_visual_selection* sel = nullptr;
  ASSERT_EQ(attnkit_visual_pruner_select_ragged(p, ev, fv, sizes, 2, tv, &sel), nullptr);
  ASSERT_EQ(attnkit_visual_selection_num_images(sel), 2u);
  EXPECT_EQ(attnkit_visual_selection_image_size(sel, 0), 5u);
  EXPECT_EQ(attnkit_visual_selection_image_size(sel, 1), 3u);
  // Each image equals selecting it alone.
  for (int i = 0; i < 2; ++i) {
    at::Tensor ei = e.narrow(0, i == 0 ? 0 : 5, sizes[i]);
    at::Tensor fi = f.narrow(0, i == 0 ? 0 : 5, sizes[i]);
    DLView eiv(ei), fiv(fi);
    attnkit_visual_selection* one = nullptr;
    ASSERT_EQ(attnkit_visual_pruner_select(p, eiv, fiv, tv, &one), nullptr);
    EXPECT_EQ(Kept(sel, i), Kept(one, 0));
    attnkit_visual_selection_free(one);
  }
  attnkit_int64_array* flat = nullptr;
  ASSERT_EQ(attnkit_visual_selection_flat_indices(sel, &flat), nullptr);
  Indices expect_flat = Kept(sel, 0);
  for (int64_t v : Kept(sel, 1)) expect_flat.push_back(v + 5);
  EXPECT_EQ(Indices(flat->data, flat->data + flat->size), expect_flat);
  attnkit_int64_array_free(flat);

  // Prompt: 2 text tokens, image 0 (5 tokens), 1 text token, image 1 (3 tokens), 1 text token.
  const uint8_t mask[] = {0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0};
  attnkit_int64_array* kept = nullptr;
  ASSERT_EQ(attnkit_visual_selection_kept_positions(sel, mask, sizeof(mask), &kept), nullptr);
  Indices expect{0, 1, 7, 11};
  for (int64_t v : Kept(sel, 0)) expect.push_back(2 + v);
  for (int64_t v : Kept(sel, 1)) expect.push_back(8 + v);
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(Indices(kept->data, kept->data + kept->size), expect);
  attnkit_int64_array_free(kept);
  // The mask must mark exactly the images' tokens.
  Status s(attnkit_visual_selection_kept_positions(sel, mask, 6, &kept));
  EXPECT_EQ(s.code, ATTNKIT_INVALID_ARGUMENT);
  EXPECT_NE(s.message.find("image_token_mask"), std::string::npos) << s.message;
  EXPECT_EQ(kept, nullptr);

  const int64_t bad_sizes[] = {5, 4};
  attnkit_visual_selection* none = nullptr;
  Status s2(attnkit_visual_pruner_select_ragged(p, ev, fv, bad_sizes, 2, tv, &none));
  EXPECT_NE(s2.message.find("image_sizes"), std::string::npos) << s2.message;
  const int64_t zero_sizes[] = {8, 0};
  Status s3(attnkit_visual_pruner_select_ragged(p, ev, fv, zero_sizes, 2, tv, &none));
  EXPECT_NE(s3.message.find("image_sizes[1]"), std::string::npos) << s3.message;
  Status s4(attnkit_visual_pruner_select_ragged(p, ev, fv, nullptr, 2, tv, &none));
  EXPECT_NE(s4.message.find("image_sizes"), std::string::npos) << s4.message;
  // Budget 2 exceeds nothing here, but 4 exceeds image 1's 3 tokens.
  attnkit_visual_pruner* p4 = FromText("num_keep_tokens: 4");
  Status s5(attnkit_visual_pruner_select_ragged(p4, ev, fv, sizes, 2, tv, &none));
  EXPECT_EQ(s5.code, ATTNKIT_INVALID_ARGUMENT);
  EXPECT_NE(s5.message.find("num_keep_tokens"), std::string::npos) << s5.message;
  EXPECT_EQ(none, nullptr);
  attnkit_visual_pruner_free(p4);
  attnkit_visual_selection_free(sel);
  attnkit_visual_pruner_free(p);
}

TEST(CapiVisual, GlobalBudgetSpansImages) {
  attnkit_visual_pruner* p = FromText("num_keep_tokens: 10 budget_scope: GLOBAL");
  at::manual_seed(4);
  at::Tensor e = at::randn({2, 8, 8}), f = at::randn({2, 8, 32}), t = at::randn({2, 8});
  DLView ev(e), fv(f), tv(t);
  attnkit_visual_selection* sel = nullptr;
  ASSERT_EQ(attnkit_visual_pruner_select(p, ev, fv, tv, &sel), nullptr);
  EXPECT_EQ(Kept(sel, 0).size() + Kept(sel, 1).size(), 10u);
  attnkit_visual_selection_free(sel);
  attnkit_visual_pruner_free(p);
}

TEST(CapiVisual, BaselinesNeedOnlyFeatures) {
  at::Tensor f = at::randn({12, 4});
  DLView fv(f);
  for (const char* cfg :
       {"method: DIVPRUNE num_keep_tokens: 3", "method: RANDOM_SUBSET keep_ratio: 0.25 seed: 9",
        "method: UNIFORM_GRID num_keep_tokens: 3"}) {
    attnkit_visual_pruner* p = FromText(cfg);
    attnkit_visual_selection* sel = nullptr;
    Status s(attnkit_visual_pruner_select(p, nullptr, fv, nullptr, &sel));
    ASSERT_EQ(s.code, ATTNKIT_OK) << cfg << ": " << s.message;
    EXPECT_EQ(Kept(sel, 0).size(), 3u) << cfg;
    attnkit_visual_selection_free(sel);
    attnkit_visual_pruner_free(p);
  }
  attnkit_visual_pruner* p = FromText("method: UNIFORM_GRID num_keep_tokens: 3");
  attnkit_visual_selection* sel = nullptr;
  ASSERT_EQ(attnkit_visual_pruner_select(p, nullptr, fv, nullptr, &sel), nullptr);
  EXPECT_EQ(Kept(sel, 0), (Indices{2, 6, 10}));
  attnkit_visual_selection_free(sel);
  attnkit_visual_pruner_free(p);
}

TEST(CapiVisual, BadArgumentsNameTheArgumentAndShape) {
  attnkit_visual_pruner* p = FromText("num_keep_tokens: 2");
  at::Tensor e = at::randn({6, 8}), f = at::randn({6, 4}), t = at::randn({2, 8});
  DLView ev(e), fv(f), tv(t);
  attnkit_visual_selection* sel = reinterpret_cast<attnkit_visual_selection*>(1);
  auto expect = [&](attnkit_status* status, const std::string& what) {
    Status s(status);
    EXPECT_EQ(s.code, ATTNKIT_INVALID_ARGUMENT) << what;
    EXPECT_NE(s.message.find(what), std::string::npos) << s.message;
    EXPECT_EQ(sel, nullptr);
  };
  expect(attnkit_visual_pruner_select(nullptr, ev, fv, tv, &sel), "pruner");
  Status no_out(attnkit_visual_pruner_select(p, ev, fv, tv, nullptr));
  EXPECT_NE(no_out.message.find("out"), std::string::npos);
  // NULL embeddings or text: CDPRUNER's need for them is named with the C argument.
  expect(attnkit_visual_pruner_select(p, nullptr, fv, tv, &sel),
         "image_embeds: CDPRUNER needs the image embeddings");
  expect(attnkit_visual_pruner_select(p, ev, nullptr, tv, &sel), "image_features");
  expect(attnkit_visual_pruner_select(p, ev, fv, nullptr, &sel),
         "text_embeds: CDPRUNER needs the text embeddings");
  at::Tensor e5 = at::randn({5, 8});
  DLView e5v(e5);
  expect(attnkit_visual_pruner_select(p, e5v, fv, tv, &sel), "image_embeds: expected shape [N, C]");
  at::Tensor t9 = at::randn({2, 9});
  DLView t9v(t9);
  expect(attnkit_visual_pruner_select(p, ev, fv, t9v, &sel), "text_embeds: expected shape [M, 8]");
  at::Tensor f1 = at::randn({6});
  DLView f1v(f1);
  expect(attnkit_visual_pruner_select(p, ev, f1v, tv, &sel), "image_features: expected shape");
  at::Tensor fl = at::zeros({6, 4}, at::kLong);
  DLView flv(fl);
  expect(attnkit_visual_pruner_select(p, ev, flv, tv, &sel), "image_features: expected float32");
  at::Tensor fd = at::zeros({6, 4}, at::kDouble);
  DLView fdv(fd);
  expect(attnkit_visual_pruner_select(p, ev, fdv, tv, &sel), "image_features");
  at::Tensor f0 = at::zeros({0, 4});
  at::Tensor e0 = at::zeros({0, 8});
  DLView f0v(f0), e0v(e0);
  expect(attnkit_visual_pruner_select(p, e0v, f0v, tv, &sel), "image_features");
  attnkit_visual_pruner* big = FromText("num_keep_tokens: 7");
  expect(attnkit_visual_pruner_select(big, ev, fv, tv, &sel), "num_keep_tokens");
  attnkit_visual_pruner_free(big);
  attnkit_visual_pruner_free(p);
}

TEST(CapiVisual, StridedAndHalfInputs) {
  attnkit_visual_pruner* p = FromText("num_keep_tokens: 4");
  at::manual_seed(6);
  at::Tensor e = at::randn({20, 8}), f = at::randn({20, 32}), t = at::randn({2, 8});
  // A transposed (non-contiguous) view of the same values gives the same answer.
  at::Tensor ft = f.t().contiguous().t();
  DLView ev(e), fv(f), ftv(ft), tv(t);
  attnkit_visual_selection *a = nullptr, *b = nullptr;
  ASSERT_EQ(attnkit_visual_pruner_select(p, ev, fv, tv, &a), nullptr);
  ASSERT_EQ(attnkit_visual_pruner_select(p, ev, ftv, tv, &b), nullptr);
  EXPECT_EQ(Kept(a, 0), Kept(b, 0));
  attnkit_visual_selection_free(b);
  at::Tensor eh = e.to(at::kHalf), fh = f.to(at::kBFloat16);
  DLView ehv(eh), fhv(fh);
  ASSERT_EQ(attnkit_visual_pruner_select(p, ehv, fhv, tv, &b), nullptr);
  EXPECT_EQ(Kept(b, 0).size(), 4u);
  attnkit_visual_selection_free(a);
  attnkit_visual_selection_free(b);
  attnkit_visual_pruner_free(p);
}

}  // namespace
