// MpiComm: non-blocking MPI collectives on host buffers, and the MPI_Ops that reduce bf16/fp16.
#include "runtime/mpi_comm.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "runtime/error.h"
#include "runtime/mpi_check.h"

namespace zt {

namespace detail {

// The busy time of an MpiComm: the union of the intervals during which some collective was in
// flight. Used from the one thread that calls into MPI.
struct MpiBusyClock {
  using Clock = std::chrono::steady_clock;
  int active = 0;             // collectives issued and not yet seen complete
  Clock::time_point since;    // while active > 0: when the current busy interval (or count) began
  double seconds = 0.0;       // closed busy time not yet taken

  void start() {
    if (active++ == 0) since = Clock::now();
  }
  void stop() {
    if (--active == 0) seconds += std::chrono::duration<double>(Clock::now() - since).count();
  }
  // Closed time plus the open interval up to now; the open interval then continues from now.
  double take() {
    double s = seconds;
    seconds = 0.0;
    if (active > 0) {
      const Clock::time_point now = Clock::now();
      s += std::chrono::duration<double>(now - since).count();
      since = now;
    }
    return s;
  }
};

}  // namespace detail

namespace {

using detail::MpiBusyClock;

// One collective's MPI requests: several when a large call is split into pieces, none when the
// count is 0. Complete when all of them are.
class MpiRequest final : public CommRequest {
 public:
  explicit MpiRequest(std::shared_ptr<MpiBusyClock> busy) : busy_(std::move(busy)) {}
  ~MpiRequest() override {
    if (!done_) wait_reporting_errors("MpiComm");
  }

  void add(MPI_Request request) {
    if (!busy_counted_) busy_->start();
    busy_counted_ = true;
    requests_.push_back(request);
    done_ = false;
  }

  void wait() override {
    if (done_) return;
    const int status = MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(),
                                   MPI_STATUSES_IGNORE);
    stop_busy();  // complete or failed: either way no longer in flight
    ZT_MPI_CHECK(status);
    done_ = true;
  }

  bool test() override {
    if (done_) return true;
    int flag = 0;
    const int status = MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag,
                                   MPI_STATUSES_IGNORE);
    if (status != MPI_SUCCESS || flag != 0) stop_busy();
    ZT_MPI_CHECK(status);
    done_ = flag != 0;
    return done_;
  }

 private:
  void stop_busy() {
    if (busy_counted_) busy_->stop();
    busy_counted_ = false;
  }

  std::shared_ptr<MpiBusyClock> busy_;
  std::vector<MPI_Request> requests_;
  bool done_ = true;            // nothing to wait for until a request is added
  bool busy_counted_ = false;   // counted in busy_->active until seen complete
};

// bf16 and fp16 have no MPI datatype: their bit patterns travel as MPI_UINT16_T and these ops
// give them meaning. Sums add in fp32 and round to nearest even once per pairwise combination
// (runtime/comm.h promises exactly that). Max compares as fp32 and keeps the larger input's bits
// unchanged; a NaN wins, so an overflow marker is never hidden by a reduction.
inline float to_float(bf16 h) { return bf16_to_float(h); }
inline float to_float(f16 h) { return f16_to_float(h); }
template <class T>
T from_float(float f);
template <>
bf16 from_float<bf16>(float f) {
  return float_to_bf16(f);
}
template <>
f16 from_float<f16>(float f) {
  return float_to_f16(f);
}

// MPI_User_function: inout[i] = in[i] (op) inout[i].
template <class T>
void sum_16bit(void* in, void* inout, int* len, MPI_Datatype* /*datatype*/) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  const int n = *len;
  for (int i = 0; i < n; ++i) b[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

template <class T>
void max_16bit(void* in, void* inout, int* len, MPI_Datatype* /*datatype*/) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  const int n = *len;
  for (int i = 0; i < n; ++i) {
    const float x = to_float(a[i]);
    const float y = to_float(b[i]);
    if (std::isnan(y)) continue;
    if (std::isnan(x) || x > y) b[i] = a[i];
  }
}

struct HalfOps {
  MPI_Op bf16_sum = MPI_OP_NULL;
  MPI_Op bf16_max = MPI_OP_NULL;
  MPI_Op f16_sum = MPI_OP_NULL;
  MPI_Op f16_max = MPI_OP_NULL;
};

// Created on first use, when MPI is certainly initialised (an MpiComm exists); the function-local
// static makes that thread-safe. Never freed: freeing after MPI_Finalize would be an error, and
// four op handles are all it keeps.
const HalfOps& half_ops() {
  static const HalfOps ops = [] {
    HalfOps o;
    constexpr int kCommutative = 1;
    ZT_MPI_CHECK(MPI_Op_create(&sum_16bit<bf16>, kCommutative, &o.bf16_sum));
    ZT_MPI_CHECK(MPI_Op_create(&max_16bit<bf16>, kCommutative, &o.bf16_max));
    ZT_MPI_CHECK(MPI_Op_create(&sum_16bit<f16>, kCommutative, &o.f16_sum));
    ZT_MPI_CHECK(MPI_Op_create(&max_16bit<f16>, kCommutative, &o.f16_max));
    return o;
  }();
  return ops;
}

MPI_Datatype mpi_datatype(DType dtype) {
  switch (dtype) {
    case DType::kF32: return MPI_FLOAT;
    case DType::kF64: return MPI_DOUBLE;
    case DType::kBF16:
    case DType::kF16: return MPI_UINT16_T;
  }
  ZT_FAIL("MpiComm: unknown dtype ", static_cast<int>(dtype));
}

MPI_Op mpi_op(DType dtype, ReduceOp op) {
  const bool sum = op == ReduceOp::kSum;
  ZT_CHECK(sum || op == ReduceOp::kMax, "MpiComm: unknown reduce op ", static_cast<int>(op));
  switch (dtype) {
    case DType::kF32:
    case DType::kF64: return sum ? MPI_SUM : MPI_MAX;
    case DType::kBF16: return sum ? half_ops().bf16_sum : half_ops().bf16_max;
    case DType::kF16: return sum ? half_ops().f16_sum : half_ops().f16_max;
  }
  ZT_FAIL("MpiComm: unknown dtype ", static_cast<int>(dtype));
}

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto a0 = reinterpret_cast<std::uintptr_t>(a);
  const auto b0 = reinterpret_cast<std::uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

}  // namespace

MpiComm::MpiComm(MPI_Comm comm, size_t max_elements_per_call)
    : comm_(comm),
      max_elements_per_call_(max_elements_per_call),
      busy_(std::make_shared<MpiBusyClock>()) {
  int initialized = 0;
  int finalized = 0;
  ZT_MPI_CHECK(MPI_Initialized(&initialized));
  ZT_MPI_CHECK(MPI_Finalized(&finalized));
  ZT_CHECK(initialized && !finalized, "MpiComm needs MPI initialised (and not yet finalised)");
  ZT_CHECK(comm != MPI_COMM_NULL, "MpiComm: MPI_COMM_NULL is not a communicator");
  ZT_CHECK(max_elements_per_call >= 1 && max_elements_per_call <= size_t(INT_MAX),
           "MpiComm: max_elements_per_call must be in [1, ", INT_MAX, "], got ",
           max_elements_per_call);
  ZT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  ZT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

template <class Start>
CommHandle MpiComm::in_pieces(size_t count, Start start) const {
  // Counts must agree on every rank, so a count of 0 is skipped by all ranks alike.
  auto request = std::make_unique<MpiRequest>(busy_);
  for (size_t offset = 0; offset < count; offset += max_elements_per_call_) {
    MPI_Request piece = MPI_REQUEST_NULL;
    start(offset, static_cast<int>(std::min(max_elements_per_call_, count - offset)), &piece);
    request->add(piece);
  }
  return request;
}

CommHandle MpiComm::all_reduce(void* data, size_t count, DType dtype, ReduceOp op) {
  const MPI_Datatype type = mpi_datatype(dtype);
  const MPI_Op mop = mpi_op(dtype, op);
  const size_t elem = dtype_size(dtype);
  char* bytes = static_cast<char*>(data);
  return in_pieces(count, [&](size_t offset, int n, MPI_Request* piece) {
    ZT_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, bytes + offset * elem, n, type, mop, comm_, piece));
  });
}

CommHandle MpiComm::reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype,
                                   ReduceOp op) {
  const MPI_Datatype type = mpi_datatype(dtype);
  const MPI_Op mop = mpi_op(dtype, op);
  const size_t elem = dtype_size(dtype);
  // Not split: Open MPI indexes the whole send buffer (size() * recv_count elements) with int.
  ZT_CHECK(recv_count <= size_t(INT_MAX) / size_t(size_),
           "MpiComm::reduce_scatter: ", size_, " ranks x ", recv_count,
           " elements exceed MPI's int element count (", INT_MAX,
           "); reduce-scatter smaller buckets");
  ZT_CHECK(!overlaps(send, size_ * recv_count * elem, recv, recv_count * elem),
           "MpiComm::reduce_scatter: send and recv buffers overlap");
  auto request = std::make_unique<MpiRequest>(busy_);
  if (recv_count == 0) return request;
  MPI_Request piece = MPI_REQUEST_NULL;
  ZT_MPI_CHECK(MPI_Ireduce_scatter_block(send, recv, static_cast<int>(recv_count), type, mop,
                                         comm_, &piece));
  request->add(piece);
  return request;
}

CommHandle MpiComm::all_gather(const void* send, void* recv, size_t send_count, DType dtype) {
  const MPI_Datatype type = mpi_datatype(dtype);
  const size_t elem = dtype_size(dtype);
  ZT_CHECK(send_count <= size_t(INT_MAX) / size_t(size_),
           "MpiComm::all_gather: ", size_, " ranks x ", send_count,
           " elements exceed MPI's int element count (", INT_MAX, "); gather smaller buckets");
  auto request = std::make_unique<MpiRequest>(busy_);
  if (send_count == 0) return request;
  const int n = static_cast<int>(send_count);
  const void* own_block = static_cast<const char*>(recv) + size_t(rank_) * send_count * elem;
  MPI_Request piece = MPI_REQUEST_NULL;
  if (send == own_block) {
    // The engine gathers parameters in place: this rank's block already sits in recv.
    ZT_MPI_CHECK(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, n, type, comm_, &piece));
  } else {
    ZT_CHECK(!overlaps(send, send_count * elem, recv, size_ * send_count * elem),
             "MpiComm::all_gather: send overlaps recv without being this rank's block of it");
    ZT_MPI_CHECK(MPI_Iallgather(send, n, type, recv, n, type, comm_, &piece));
  }
  request->add(piece);
  return request;
}

CommHandle MpiComm::broadcast(void* data, size_t count, DType dtype, int root) {
  ZT_CHECK(root >= 0 && root < size_, "MpiComm::broadcast: root ", root,
           " is not a rank of this ", size_, "-rank communicator");
  const MPI_Datatype type = mpi_datatype(dtype);
  const size_t elem = dtype_size(dtype);
  char* bytes = static_cast<char*>(data);
  return in_pieces(count, [&](size_t offset, int n, MPI_Request* piece) {
    ZT_MPI_CHECK(MPI_Ibcast(bytes + offset * elem, n, type, root, comm_, piece));
  });
}

void MpiComm::barrier() {
  busy_->start();
  const int status = MPI_Barrier(comm_);
  busy_->stop();
  ZT_MPI_CHECK(status);
}

double MpiComm::take_busy_seconds() { return busy_->take(); }

}  // namespace zt
