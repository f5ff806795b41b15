// NcclComm: NCCL collectives on a communication stream, requests backed by CUDA events, and the
// watchdog that bounds every host wait on them (issue 8; the contract is in nccl_comm.h).
#include "runtime/cuda/nccl_comm.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <thread>

#include "runtime/cuda/cuda_check.h"
#include "runtime/dtype.h"
#include "runtime/log.h"

namespace zt {

namespace {

using Clock = std::chrono::steady_clock;

// Polling: kSpinQueries back-to-back cudaEventQuery calls first, so a wait that is already over
// (or ends within a few microseconds) costs what cudaEventSynchronize would; then yields until
// kYieldFor has passed (wake-up latency of a context switch, like CUDA's default spin-wait); then
// sleeps 1/64 of the time waited so far, at most kMaxSleep: a long wait adds at most ~1.6% (and
// never more than 1 ms) of latency and leaves the core free.
constexpr int kSpinQueries = 64;
constexpr auto kYieldFor = std::chrono::milliseconds(2);
constexpr auto kMaxSleep = std::chrono::milliseconds(1);

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kF64: return ncclFloat64;
    case DType::kBF16: return ncclBfloat16;
    case DType::kF16: return ncclFloat16;
  }
  ZT_FAIL("no NCCL type for dtype ", int(dtype));
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::kSum ? ncclSum : ncclMax; }

void backoff(Clock::duration waited) {
  if (waited < kYieldFor) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::min<Clock::duration>(kMaxSleep, waited / 64));
  }
}

// True once `event` has fired; throws on a CUDA error (including earlier asynchronous ones).
bool event_done(cudaEvent_t event) {
  const cudaError_t status = cudaEventQuery(event);
  if (status == cudaSuccess) return true;
  if (status == cudaErrorNotReady) return false;
  ZT_CUDA_CHECK(status);
  return false;
}

}  // namespace

namespace detail {

// What a host wait is waiting for, for error messages: a collective (kind, elements, dtype and
// its sequence number on this communicator, equal on every rank) or another phase (init, ...).
struct NcclOp {
  const char* kind = "";
  size_t count = 0;
  DType dtype = DType::kF32;
  uint64_t seq = 0;  // 0: not a collective (kind names the phase)
  const NcclOp* after = nullptr;  // host_sync: the latest collective, which the stream may wait on
};

static std::string describe(const NcclOp& op) {
  std::string s = op.seq == 0 ? std::string(op.kind)
                              : concat(op.kind, " #", op.seq, " (", op.count, " elements of ",
                                       dtype_name(op.dtype), ")");
  if (op.after != nullptr) s += concat(", after ", describe(*op.after));
  return s;
}

// The state shared by an NcclComm and its requests (which may outlive it): the communicator,
// the timeout and, once aborted, the error every later call throws. Used from one host thread,
// as NCCL communicators are.
struct NcclWatchdog {
  ncclComm_t comm = nullptr;  // null once destroyed or aborted
  int rank = 0;
  int size = 1;
  double timeout_s = 0.0;     // as configured; 0: wait forever
  Clock::duration timeout{};  // timeout_s as a duration; zero: wait forever
  uint64_t issued = 0;        // collectives issued so far: the next one is issued + 1
  NcclOp last;                // the latest collective, named by host_sync's errors
  std::string failure;        // the complete error message after an abort; empty before

  NcclWatchdog(int rank_in, int size_in, double timeout_in)
      : rank(rank_in), size(size_in), timeout_s(timeout_in) {
    // Capped at ~30 years so the conversion to nanoseconds cannot overflow.
    if (timeout_s > 0)
      timeout = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(std::min(timeout_s, 1e9)));
  }
  ~NcclWatchdog() {
    // Only when NcclComm's constructor threw after ncclCommInitRankConfig: no work was queued.
    if (comm != nullptr) ncclCommAbort(comm);
  }

  bool failed() const { return !failure.empty(); }
  void throw_if_failed() const {
    if (!failure.empty()) [[unlikely]]
      throw Error(failure);
  }

  bool timed_out(Clock::duration waited) const {
    return timeout != Clock::duration::zero() && waited >= timeout;
  }

  // Aborts the communicator, remembers `message` (with the check-macro family's location and
  // rank) as the error of every later call, and throws it.
  [[noreturn]] void fail(const std::string& message) {
    if (comm != nullptr) {
      // ncclCommAbort asks NCCL's kernels to quit and frees the communicator; its result is of no
      // use (the comm is gone either way) and must not mask the error being reported.
      ncclCommAbort(comm);
      comm = nullptr;
    }
    try {
      ZT_FAIL(message);
    } catch (const Error& e) {
      failure = e.what();
    }
    throw Error(failure);
  }

  [[noreturn]] void fail_timeout(const NcclOp& op, Clock::duration waited) {
    const double seconds = std::chrono::duration<double>(waited).count();
    fail(concat("NCCL ", describe(op), " made no progress on rank ", rank, " of ", size, " for ",
                seconds, " s (comm.timeout_s = ", timeout_s,
                "): the communicator was aborted. Another rank may have died or be stuck (look for "
                "its error in the log), or the ranks issued different collectives; if this wait is "
                "legitimately that long (a slow first step, checkpoint I/O on other ranks), raise "
                "comm.timeout_s (0 waits forever)."));
  }

  [[noreturn]] void fail_nccl(const NcclOp& op, ncclResult_t status) {
    // The detail string belongs to the communicator: read it before the abort frees it.
    const std::string detail = ncclGetLastError(comm);
    fail(concat("NCCL ", describe(op), " failed on rank ", rank, " of ", size, ": ",
                ncclGetErrorString(status), " (", detail,
                "); the communicator was aborted. Another rank may have died or the network failed "
                "(run with NCCL_DEBUG=WARN for NCCL's own report); the run cannot continue."));
  }

  // Throws (after aborting) if NCCL reports an asynchronous error. ncclInProgress is not one: a
  // non-blocking communicator reports it while it initialises or launches in the background.
  void poll_async_error(const NcclOp& op) {
    if (comm == nullptr) return;  // destroyed (not aborted): nothing left to report
    ncclResult_t async = ncclSuccess;
    const ncclResult_t status = ncclCommGetAsyncError(comm, &async);
    if (status != ncclSuccess) fail_nccl(op, status);
    if (async != ncclSuccess && async != ncclInProgress) fail_nccl(op, async);
  }

  // Blocks until `event` has fired, under the watchdog.
  void wait_event(cudaEvent_t event, const NcclOp& op) {
    throw_if_failed();
    for (int i = 0; i < kSpinQueries; ++i)
      if (event_done(event)) return;
    const Clock::time_point start = Clock::now();
    for (;;) {
      poll_async_error(op);
      const Clock::duration waited = Clock::now() - start;
      if (timed_out(waited)) fail_timeout(op, waited);
      backoff(waited);
      if (event_done(event)) return;
    }
  }

  // Blocks until a non-blocking call (init, a launch that returned ncclInProgress, finalize) has
  // finished, under the watchdog: NCCL then reports ncclSuccess from ncclCommGetAsyncError.
  void wait_ready(const NcclOp& op) {
    const Clock::time_point start = Clock::now();
    for (;;) {
      throw_if_failed();
      ncclResult_t async = ncclSuccess;
      const ncclResult_t status = ncclCommGetAsyncError(comm, &async);
      if (status != ncclSuccess) fail_nccl(op, status);
      if (async == ncclSuccess) return;
      if (async != ncclInProgress) fail_nccl(op, async);
      const Clock::duration waited = Clock::now() - start;
      if (timed_out(waited)) fail_timeout(op, waited);
      backoff(waited);
    }
  }

  // Completes what a call on the communicator returned: ncclInProgress is waited for; bad
  // arguments throw and leave the communicator usable; any other error aborts it.
  void complete(ncclResult_t status, const NcclOp& op) {
    if (status == ncclSuccess) [[likely]]
      return;
    if (status == ncclInProgress) return wait_ready(op);
    if (status == ncclInvalidArgument || status == ncclInvalidUsage)
      ZT_FAIL("NCCL ", describe(op), " rejected on rank ", rank, ": ", ncclGetErrorString(status),
              " (", ncclGetLastError(comm), ")");
    fail_nccl(op, status);
  }
};

}  // namespace detail

namespace {

using detail::NcclOp;
using detail::NcclWatchdog;

// Complete when the event recorded after the collective has fired.
class NcclRequest final : public CommRequest {
 public:
  NcclRequest(std::shared_ptr<NcclWatchdog> watchdog, cudaStream_t stream, const NcclOp& op)
      : watchdog_(std::move(watchdog)), op_(op) {
    ZT_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    ZT_CUDA_CHECK(cudaEventRecord(done_, stream));
  }
  ~NcclRequest() override {
    // A request nobody waited for: its buffers may be freed next (a plain cudaFree does not
    // wait for the communication stream), so the host waits. Once a stream waits on the event,
    // the buffers' stream-ordered frees on that stream come after the collective anyway, and
    // dropping the request must not stall the host (DESIGN.md section 4: no host sync in a step).
    // After an abort NCCL's kernels have quit: there is nothing left to wait for.
    if (!stream_waited_ && !watchdog_->failed()) {
      try {
        watchdog_->wait_event(done_, op_);
      } catch (const std::exception& e) {
        // A destructor cannot throw: the communicator is aborted now, so the next call on it
        // throws this error again.
        log_error("while dropping a request: ", e.what());
      }
    }
    // Safe even if the event is still pending: CUDA releases it once it fires.
    cudaEventDestroy(done_);
  }
  void wait() override {
    if (!complete_) watchdog_->wait_event(done_, op_);
    complete_ = true;
    stream_waited_ = true;  // complete: nothing is left to order after
  }
  void on_stream_wait() const { stream_waited_ = true; }
  bool test() override {
    if (complete_) return true;
    watchdog_->throw_if_failed();
    if (event_done(done_)) return complete_ = true;
    // A caller polling test() in a loop is bounded like wait(): the timeout runs from its first
    // unsuccessful poll.
    watchdog_->poll_async_error(op_);
    const Clock::time_point now = Clock::now();
    if (!first_poll_) first_poll_ = now;
    if (watchdog_->timed_out(now - *first_poll_)) watchdog_->fail_timeout(op_, now - *first_poll_);
    return false;
  }
  cudaEvent_t event() const { return done_; }
  NcclWatchdog& watchdog() const { return *watchdog_; }

 private:
  std::shared_ptr<NcclWatchdog> watchdog_;
  NcclOp op_;
  cudaEvent_t done_ = nullptr;
  bool complete_ = false;
  mutable bool stream_waited_ = false;
  std::optional<Clock::time_point> first_poll_;
};

}  // namespace

namespace {
// The run's communicator (one per process), whose watchdog watched_sync() waits under.
NcclComm* active_comm = nullptr;
}  // namespace

NcclComm::NcclComm(Comm& bootstrap, int device, cudaStream_t compute_stream, double timeout_s)
    : device_(device), rank_(bootstrap.rank()), size_(bootstrap.size()), compute_stream_(compute_stream) {
  ZT_CHECK(bootstrap.device().is_cpu(), "NCCL is bootstrapped over a host Comm (MPI)");
  ZT_CHECK(timeout_s >= 0, "comm.timeout_s must be >= 0 (0 waits forever), got ", timeout_s);
  ZT_CUDA_CHECK(cudaSetDevice(device));
  ncclUniqueId id;
  if (rank_ == 0) ZT_NCCL_CHECK(ncclGetUniqueId(&id));
  // The id is opaque bytes: carry them as 16-bit words, which MPI moves bit for bit.
  static_assert(sizeof(ncclUniqueId) % 2 == 0);
  bootstrap.broadcast(&id, sizeof(id) / 2, DType::kBF16, 0)->wait();
  state_ = std::make_shared<NcclWatchdog>(rank_, size_, timeout_s);
  // A blocking communicator, as validated on 2 GPUs: initialisation right after the MPI
  // bootstrap (which already saw every rank alive) and launches return only once done; what can
  // wait long is the collective on the GPU, and every host wait for that is watched. (A
  // non-blocking communicator, config.blocking = 0, would watch initialisation and the first
  // connection to each peer too; the code below handles its ncclInProgress, but that mode has not
  // run on more than one GPU yet.)
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 1;
  const NcclOp init{"communicator initialisation"};
  const ncclResult_t status = ncclCommInitRankConfig(&state_->comm, size_, id, rank_, &config);
  if (state_->comm == nullptr) ZT_NCCL_CHECK(status);  // failed before a communicator existed
  state_->complete(status, init);
  ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
  ZT_CUDA_CHECK(cudaEventCreateWithFlags(&compute_ready_, cudaEventDisableTiming));
  ZT_CUDA_CHECK(cudaEventCreateWithFlags(&sync_mark_, cudaEventDisableTiming));
  active_comm = this;
}

void NcclComm::watched_sync(cudaStream_t stream) {
  if (active_comm != nullptr && !active_comm->aborted()) active_comm->host_sync(stream);
  else ZT_CUDA_CHECK(cudaStreamSynchronize(stream));
}

void NcclComm::watched_pageable_copy(void* dst, const void* src, size_t bytes,
                                     cudaMemcpyKind kind, cudaStream_t stream) {
  watched_sync(stream);
  ZT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, stream));
  watched_sync(stream);
}

void NcclComm::watched_event_sync(cudaEvent_t event) {
  if (active_comm != nullptr && !active_comm->aborted()) {
    const NcclOp op{"host wait for queued GPU work"};
    active_comm->state_->wait_event(event, op);
  } else {
    ZT_CUDA_CHECK(cudaEventSynchronize(event));
  }
}

NcclComm::~NcclComm() {
  if (active_comm == this) active_comm = nullptr;
  cudaSetDevice(device_);
  NcclWatchdog& w = *state_;
  if (w.comm != nullptr && std::uncaught_exceptions() > 0) {
    // The job is failing: peers may never join a finalize, and aborting would free memory that
    // peers on this node may still touch. Leave the communicator to the process's exit (main
    // ends every rank), and let the requests know it is gone.
    w.comm = nullptr;
  } else if (w.comm != nullptr) {
    try {
      const NcclOp shutdown{"shutdown (the collectives still queued)"};
      ZT_CUDA_CHECK(cudaEventRecord(sync_mark_, comm_stream_));
      w.wait_event(sync_mark_, shutdown);
      // Everything this rank queued is done: destroy frees the local resources (as before the
      // watchdog; a finalize would wait for the other ranks, unwatched on a blocking communicator).
      ncclCommDestroy(w.comm);
      w.comm = nullptr;
    } catch (const std::exception& e) {
      log_error("while closing the NCCL communicator: ", e.what());
      if (w.comm != nullptr) {  // fail() aborts; a rejected call or a CUDA error does not
        ncclCommAbort(w.comm);
        w.comm = nullptr;
      }
    }
  }
  // Safe for events still pending (after a failure): CUDA releases them once they fire.
  for (cudaEvent_t e : timing_events_) cudaEventDestroy(e);
  if (sync_mark_ != nullptr) cudaEventDestroy(sync_mark_);
  if (compute_ready_ != nullptr) cudaEventDestroy(compute_ready_);
  if (comm_stream_ != nullptr) cudaStreamDestroy(comm_stream_);
}

double NcclComm::timeout_s() const { return state_->timeout_s; }

bool NcclComm::aborted() const { return state_->failed(); }

cudaEvent_t NcclComm::after_compute() {
  state_->throw_if_failed();
  ZT_CUDA_CHECK(cudaEventRecord(compute_ready_, compute_stream_));
  ZT_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, compute_ready_, 0));
  // After the wait: the collective's time starts when the stream reaches it.
  const cudaEvent_t start = timing_event();
  ZT_CUDA_CHECK(cudaEventRecord(start, comm_stream_));
  return start;
}

CommHandle NcclComm::finish(ncclResult_t status, const char* kind, size_t count, DType dtype,
                            cudaEvent_t start) {
  NcclWatchdog& w = *state_;
  const NcclOp op{kind, count, dtype, ++w.issued};
  w.last = op;
  // On ncclInProgress the kernel is launched by an NCCL thread: the completion event must be
  // recorded only after it is on the stream.
  try {
    w.complete(status, op);
  } catch (...) {
    // Rejected or failed: nothing to time, the start event goes back to the pool. (An event lost
    // to a CUDA error is still destroyed with this object.)
    free_timing_events_.push_back(start);
    throw;
  }
  const cudaEvent_t end = timing_event();
  ZT_CUDA_CHECK(cudaEventRecord(end, comm_stream_));
  timed_.emplace_back(start, end);
  return std::make_unique<NcclRequest>(state_, comm_stream_, op);
}

cudaEvent_t NcclComm::timing_event() {
  // The pool grows to the number of collectives in flight: finished ones are recycled first.
  if (free_timing_events_.empty()) count_finished();
  if (!free_timing_events_.empty()) {
    const cudaEvent_t e = free_timing_events_.back();
    free_timing_events_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  ZT_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDefault));  // timing enabled
  timing_events_.push_back(e);
  return e;
}

void NcclComm::count_finished() {
  while (!timed_.empty()) {
    const auto [start, end] = timed_.front();
    // The stream is in order: once the end event has fired, the start event has too.
    if (!event_done(end)) return;
    float ms = 0.0f;
    ZT_CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
    busy_ms_ += double(ms);
    timed_.pop_front();
    free_timing_events_.push_back(start);
    free_timing_events_.push_back(end);
  }
}

double NcclComm::take_busy_seconds() {
  count_finished();
  const double seconds = busy_ms_ / 1000.0;
  busy_ms_ = 0.0;
  return seconds;
}

CommHandle NcclComm::all_reduce(void* data, size_t count, DType dtype, ReduceOp op) {
  const cudaEvent_t start = after_compute();
  const ncclResult_t status =
      count > 0 ? ncclAllReduce(data, data, count, nccl_type(dtype), nccl_op(op), state_->comm, comm_stream_)
                : ncclSuccess;
  return finish(status, "all_reduce", count, dtype, start);
}

CommHandle NcclComm::reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                    ReduceOp op) {
  const cudaEvent_t start = after_compute();
  const ncclResult_t status =
      recv_count > 0 ? ncclReduceScatter(send, recv, recv_count, nccl_type(dtype), nccl_op(op),
                                         state_->comm, comm_stream_)
                     : ncclSuccess;
  return finish(status, "reduce_scatter", recv_count, dtype, start);
}

CommHandle NcclComm::all_gather(const void* send, void* recv, size_t send_count, DType dtype) {
  const cudaEvent_t start = after_compute();
  // NCCL treats send == recv + rank * send_count as in place, as Comm promises.
  const ncclResult_t status =
      send_count > 0 ? ncclAllGather(send, recv, send_count, nccl_type(dtype), state_->comm, comm_stream_)
                     : ncclSuccess;
  return finish(status, "all_gather", send_count, dtype, start);
}

CommHandle NcclComm::broadcast(void* data, size_t count, DType dtype, int root) {
  ZT_CHECK(root >= 0 && root < size_, "broadcast root ", root, " outside ", size_, " ranks");
  const cudaEvent_t start = after_compute();
  const ncclResult_t status =
      count > 0 ? ncclBroadcast(data, data, count, nccl_type(dtype), root, state_->comm, comm_stream_)
                : ncclSuccess;
  return finish(status, "broadcast", count, dtype, start);
}

void NcclComm::barrier() {
  state_->throw_if_failed();
  float* one = nullptr;
  ZT_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&one), sizeof(float), comm_stream_));
  ZT_CUDA_CHECK(cudaMemsetAsync(one, 0, sizeof(float), comm_stream_));
  // The all-reduce's host wait is the barrier (under the watchdog); the free is stream-ordered
  // after it, so the host need not wait for that too.
  all_reduce(one, 1, DType::kF32, ReduceOp::kSum)->wait();
  ZT_CUDA_CHECK(cudaFreeAsync(one, comm_stream_));
}

void NcclComm::host_sync(cudaStream_t stream) {
  state_->throw_if_failed();
  ZT_CUDA_CHECK(cudaEventRecord(sync_mark_, stream));
  NcclWatchdog& w = *state_;
  NcclOp op{"host_sync (work queued on the synchronised stream)"};
  if (w.issued > 0) op.after = &w.last;
  w.wait_event(sync_mark_, op);
}

void NcclComm::stream_wait(const CommRequest& request, cudaStream_t stream) {
  const auto* r = dynamic_cast<const NcclRequest*>(&request);
  ZT_CHECK(r != nullptr, "stream_wait needs a request from an NcclComm");
  r->watchdog().throw_if_failed();
  ZT_CUDA_CHECK(cudaStreamWaitEvent(stream, r->event(), 0));
  r->on_stream_wait();
}

}  // namespace zt
