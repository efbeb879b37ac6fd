#include "attnkit/attnkit_session.h"

#include "absl/strings/str_cat.h"
#include "attnkit/config_parser.h"
#include "attnkit/session/session.h"
#include "capi_internal.h"
#include "util/status_macros.h"

struct attnkit_session {
  std::unique_ptr<attnkit::Session> session;
};

using attnkit::capi::FromDLPack;
using attnkit::capi::Guard;
using attnkit::capi::GuardVoid;
using attnkit::capi::TensorSpec;

namespace {

absl::Status Create(absl::string_view data, bool text, attnkit_session** out) {
  ATTNKIT_CHECK_ARG(out);
  *out = nullptr;
  auto options = attnkit::ParseSessionConfig(data, text);
  if (!options.ok()) return options.status();
  auto session = attnkit::Session::Create(*options);
  if (!session.ok()) return session.status();
  *out = attnkit::capi::Adopt(new attnkit_session{std::move(*session)},
                              attnkit::capi::HandleKind::kSession);
  return absl::OkStatus();
}

}  // namespace

extern "C" {

attnkit_status* attnkit_session_create(const void* config, size_t size, attnkit_session** out) {
  return Guard(__func__, [&]() -> absl::Status {
    if (config == nullptr && size > 0)
      return absl::InvalidArgumentError("config: must not be NULL");
    return Create(attnkit::capi::ByteView(config, size), false, out);
  });
}

attnkit_status* attnkit_session_create_from_text(const char* text, size_t size,
                                                 attnkit_session** out) {
  return Guard(__func__, [&]() -> absl::Status {
    if (text == nullptr && size > 0) return absl::InvalidArgumentError("text: must not be NULL");
    return Create(attnkit::capi::ByteView(text, size), true, out);
  });
}

void attnkit_session_free(attnkit_session* session) {
  GuardVoid([&] {
    if (attnkit::capi::ReleaseHandle(session, attnkit::capi::HandleKind::kSession)) delete session;
  });
}

namespace {

// q, k, v and out of an attend call, checked as DLPack tensors.
absl::Status AttendTensors(const DLTensor* q, const DLTensor* k, const DLTensor* v, DLTensor* out,
                           at::Tensor* tensors) {
  TensorSpec spec{"q"};
  spec.rank = 4;
  const DLTensor* inputs[] = {q, k, v};
  const char* names[] = {"q", "k", "v"};
  for (int i = 0; i < 3; ++i) {
    spec.name = names[i];
    auto t = FromDLPack(inputs[i], spec);
    if (!t.ok()) return t.status();
    tensors[i] = *t;
  }
  spec.name = "out";
  spec.is_output = true;
  auto ot = FromDLPack(out, spec);
  if (!ot.ok()) return ot.status();
  tensors[3] = *ot;
  return absl::OkStatus();
}

}  // namespace

attnkit_status* attnkit_session_attend(attnkit_session* session, int32_t layer, const DLTensor* q,
                                       const DLTensor* k, const DLTensor* v, DLTensor* out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    at::Tensor t[4];
    ATTNKIT_RETURN_IF_ERROR(AttendTensors(q, k, v, out, t));
    return session->session->Attend(layer, t[0], t[1], t[2], t[3]);
  });
}

attnkit_status* attnkit_session_attend_ragged(attnkit_session* session, int32_t layer,
                                              const DLTensor* q, const DLTensor* k,
                                              const DLTensor* v, DLTensor* out,
                                              const int64_t* new_tokens, size_t num_sequences) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    if (new_tokens == nullptr && num_sequences > 0) {
      return absl::InvalidArgumentError("new_tokens: must not be NULL");
    }
    at::Tensor t[4];
    ATTNKIT_RETURN_IF_ERROR(AttendTensors(q, k, v, out, t));
    return session->session->AttendRagged(layer, t[0], t[1], t[2], t[3],
                                          absl::Span<const int64_t>(new_tokens, num_sequences));
  });
}

attnkit_status* attnkit_session_reset_sequence(attnkit_session* session, int32_t sequence) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    return session->session->ResetSequence(sequence);
  });
}

attnkit_status* attnkit_session_observe(attnkit_session* session, int32_t layer, const DLTensor* q,
                                        DLTensor* out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    TensorSpec spec{"q"};
    spec.rank = 4;
    auto qt = FromDLPack(q, spec);
    if (!qt.ok()) return qt.status();
    at::Tensor ot;
    if (out != nullptr) {
      spec.name = "out";
      spec.is_output = true;
      auto checked = FromDLPack(out, spec);
      if (!checked.ok()) return checked.status();
      ot = *checked;
    }
    return session->session->Observe(layer, *qt, ot);
  });
}

attnkit_status* attnkit_session_stats(const attnkit_session* session, attnkit_buffer** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    ATTNKIT_CHECK_ARG(out);
    *out = attnkit::capi::NewBuffer(attnkit::SerializeSessionStats(session->session->Stats()));
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_session_bytes_held(const attnkit_session* session, int64_t* out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    ATTNKIT_CHECK_ARG(out);
    *out = session->session->BytesHeld();
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_session_positions(const attnkit_session* session, int32_t layer,
                                          int32_t sequence, int32_t kv_head,
                                          attnkit_int64_array** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    auto positions = session->session->Positions(layer, sequence, kv_head);
    if (!positions.ok()) return positions.status();
    *out = attnkit::capi::NewInt64Array(*positions);
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_session_next_position(const attnkit_session* session, int32_t sequence,
                                              int64_t* out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    ATTNKIT_CHECK_ARG(out);
    auto position = session->session->NextPosition(sequence);
    if (!position.ok()) return position.status();
    *out = *position;
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_session_reset(attnkit_session* session) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    session->session->Reset();
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_session_save(const attnkit_session* session, attnkit_buffer** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    auto blob = session->session->Save();
    if (!blob.ok()) return blob.status();
    *out = attnkit::capi::NewBuffer(*blob);
    return absl::OkStatus();
  });
}

attnkit_status* attnkit_session_load(attnkit_session* session, const void* blob, size_t size) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    if (blob == nullptr && size > 0) return absl::InvalidArgumentError("blob: must not be NULL");
    return session->session->Load(attnkit::capi::ByteView(blob, size));
  });
}

attnkit_status* attnkit_session_fork(const attnkit_session* session, attnkit_session** out) {
  return Guard(__func__, [&]() -> absl::Status {
    ATTNKIT_CHECK_HANDLE(session, kSession);
    ATTNKIT_CHECK_ARG(out);
    *out = nullptr;
    auto fork = session->session->Fork();
    if (!fork.ok()) return fork.status();
    *out = attnkit::capi::Adopt(new attnkit_session{std::move(*fork)},
                                attnkit::capi::HandleKind::kSession);
    return absl::OkStatus();
  });
}

}  // extern "C"
