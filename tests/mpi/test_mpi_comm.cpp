// MpiComm (runtime/mpi_comm.h) on MPI_COMM_WORLD at every world size CTest runs (1..4 ranks)
// and on MPI_COMM_SELF.
//
// Every rank runs every collective in the same order, whatever its results: checks come after
// the collectives (EXPECT_*, never an ASSERT_* that would let one rank skip a collective the
// others enter), and a failed rank reports while the others carry on.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/error.h"
#include "runtime/mpi_check.h"
#include "runtime/mpi_comm.h"

namespace zt {
namespace {

constexpr DType kAllDtypes[] = {DType::kF32, DType::kF64, DType::kBF16, DType::kF16};
constexpr ReduceOp kAllOps[] = {ReduceOp::kSum, ReduceOp::kMax};
// Never produced by value(): marks elements a collective should have overwritten.
constexpr double kSentinel = -99.0;

const char* op_name(ReduceOp op) { return op == ReduceOp::kSum ? "sum" : "max"; }

// A host buffer of n elements of any storage dtype, read and written through doubles.
class Buffer {
 public:
  Buffer(DType dtype, size_t n) : dtype_(dtype), n_(n), bytes_(n * dtype_size(dtype)) {}
  void* data() { return n_ == 0 ? nullptr : bytes_.data(); }
  const void* data() const { return n_ == 0 ? nullptr : bytes_.data(); }
  void* element(size_t i) { return bytes_.data() + i * dtype_size(dtype_); }
  size_t size() const { return n_; }
  double get(size_t i) const { return load_as_double(bytes_.data(), dtype_, i); }
  void set(size_t i, double v) { store_from_double(bytes_.data(), dtype_, i, v); }
  const std::vector<unsigned char>& bytes() const { return bytes_; }

 private:
  DType dtype_;
  size_t n_;
  std::vector<unsigned char> bytes_;
};

// Rank r's input at index i: halves in [-3, 3]. Sums over up to 4 ranks stay within +-12 in
// steps of 0.5 (5 significant bits), so every dtype, bf16 included, adds them exactly in any
// order and the expected results below are exact.
double value(int rank, size_t i) { return 0.5 * double((i * 7 + size_t(rank) * 5 + 3) % 13) - 3.0; }

double reduce_over_ranks(int size, ReduceOp op, size_t i) {
  double acc = value(0, i);
  for (int r = 1; r < size; ++r)
    acc = op == ReduceOp::kSum ? acc + value(r, i) : std::max(acc, value(r, i));
  return acc;
}

// Compares buf[offset + i] with expected(i) for i < n; reports the first mismatch and how many.
template <class Expected>
::testing::AssertionResult values_match(const Buffer& buf, size_t offset, size_t n,
                                        Expected expected) {
  size_t mismatches = 0;
  std::string first;
  for (size_t i = 0; i < n; ++i) {
    const double got = buf.get(offset + i);
    const double want = expected(i);
    if (got != want) {
      if (mismatches++ == 0)
        first = "element " + std::to_string(offset + i) + ": got " + std::to_string(got) +
                ", expected " + std::to_string(want);
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << mismatches << " of " << n << " elements differ; first "
                                       << first;
}

TEST(MpiComm, RankSizeAndDeviceMatchTheCommunicator) {
  MpiComm comm(MPI_COMM_WORLD);
  int rank = -1, size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(comm.rank(), rank);
  EXPECT_EQ(comm.size(), size);
  EXPECT_TRUE(comm.device().is_cpu());
  EXPECT_EQ(comm.mpi_comm(), MPI_COMM_WORLD);
}

TEST(MpiComm, AllReduceIsExactForEveryDtypeAndOp) {
  MpiComm comm(MPI_COMM_WORLD);
  constexpr size_t kCount = 37;
  for (DType dtype : kAllDtypes) {
    for (ReduceOp op : kAllOps) {
      Buffer buf(dtype, kCount);
      for (size_t i = 0; i < kCount; ++i) buf.set(i, value(comm.rank(), i));
      comm.all_reduce(buf.data(), kCount, dtype, op)->wait();
      EXPECT_TRUE(values_match(buf, 0, kCount,
                               [&](size_t i) { return reduce_over_ranks(comm.size(), op, i); }))
          << dtype_name(dtype) << " " << op_name(op);
    }
  }
}

// 16-bit sums that must round. Inputs lie in [1, 1.5], so a partial sum of up to 4 of them and
// the next input add exactly in fp32 (8 or 11 significant bits plus 3 bits of growth, far below
// 24); the only error is the one rounding to bf16/fp16 after each of the size() - 1 pairwise
// additions, each at most u = 2^-8 (bf16) or 2^-11 (fp16) of the partial sum. Whatever tree MPI
// uses, the error is therefore at most gamma(size() - 1) * sum|x| with gamma(k) = k u / (1 - k u)
// (Higham, recursive summation); with one rank nothing rounds and the tolerance is 0.
TEST(MpiComm, AllReduce16BitSumRoundsWithinBoundAndAgreesAcrossRanks) {
  MpiComm comm(MPI_COMM_WORLD);
  constexpr size_t kCount = 257;
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    const double u = dtype == DType::kBF16 ? std::ldexp(1.0, -8) : std::ldexp(1.0, -11);
    const double k = double(comm.size() - 1);
    const double gamma = k * u / (1.0 - k * u);

    // Every rank builds every rank's inputs so it knows the exact sum.
    auto input = [&](int rank, size_t i) {
      Buffer one(dtype, 1);
      one.set(0, 1.0 + 0.0123 * double(rank + 1) + 0.00037 * double(i * size_t(rank + 2) % 997));
      return one.get(0);  // the value after rounding to the 16-bit dtype
    };
    Buffer buf(dtype, kCount);
    for (size_t i = 0; i < kCount; ++i) buf.set(i, input(comm.rank(), i));
    comm.all_reduce(buf.data(), kCount, dtype, ReduceOp::kSum)->wait();

    // Replicas must stay identical (stage 0 all-reduces gradients into replicated parameters),
    // so every rank's result must have the same bits.
    Buffer everyone(dtype, kCount * size_t(comm.size()));
    comm.all_gather(buf.data(), everyone.data(), kCount, dtype)->wait();

    size_t outside = 0;
    std::string first;
    for (size_t i = 0; i < kCount; ++i) {
      double exact = 0.0, magnitude = 0.0;
      for (int r = 0; r < comm.size(); ++r) {
        exact += input(r, i);
        magnitude += std::fabs(input(r, i));
      }
      const double error = std::fabs(buf.get(i) - exact);
      if (error > gamma * magnitude && outside++ == 0)
        first = "element " + std::to_string(i) + ": got " + std::to_string(buf.get(i)) +
                ", exact " + std::to_string(exact) + ", bound " + std::to_string(gamma * magnitude);
    }
    EXPECT_EQ(outside, 0u) << dtype_name(dtype) << ": first " << first;
    const size_t bytes = kCount * dtype_size(dtype);
    for (int r = 0; r < comm.size(); ++r)
      EXPECT_EQ(std::memcmp(everyone.bytes().data() + size_t(r) * bytes, buf.bytes().data(), bytes),
                0)
          << dtype_name(dtype) << ": rank " << r << "'s result differs from this rank's";
  }
}

// The bound above cannot tell round-to-nearest-even from truncation. This pins the rounding
// exactly: only ranks 0 and 1 contribute, the rest add zeros (exact), so whatever the tree, the
// result is one fp32 addition rounded once to the 16-bit dtype. The inputs x = +-(1 + m/128) 2^e
// with |e| <= 4 add exactly in fp32 (at most 8 + 8 + 1 significant bits), and about half of
// those sums fall halfway between two 16-bit neighbours, so ties-to-even is exercised too.
TEST(MpiComm, AllReduce16BitSumRoundsToNearestEvenOnce) {
  MpiComm comm(MPI_COMM_WORLD);
  constexpr size_t kCount = 2000;
  auto input = [](int rank, size_t i) {
    const size_t h = (i + 1) * 2654435761u + size_t(rank) * 40503u;  // scrambles i per rank
    const double mantissa = 1.0 + double(h % 128) / 128.0;
    const int exponent = int((h >> 7) % 9) - 4;
    const double sign = ((h >> 11) & 1) ? -1.0 : 1.0;
    return rank < 2 ? sign * std::ldexp(mantissa, exponent) : 0.0;
  };
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    Buffer buf(dtype, kCount);
    for (size_t i = 0; i < kCount; ++i) buf.set(i, input(comm.rank(), i));
    comm.all_reduce(buf.data(), kCount, dtype, ReduceOp::kSum)->wait();
    // store_from_double rounds the float sum with dtype.h's round-to-nearest-even conversion.
    Buffer expected(dtype, kCount);
    for (size_t i = 0; i < kCount; ++i) {
      const float x0 = float(input(0, i));
      const float x1 = comm.size() > 1 ? float(input(1, i)) : 0.0f;
      expected.set(i, double(x0 + x1));
    }
    EXPECT_TRUE(values_match(buf, 0, kCount, [&](size_t i) { return expected.get(i); }))
        << dtype_name(dtype);
  }
}

// 16-bit max keeps the larger input's bits and lets a NaN through, so an overflow marker is never
// hidden by the reduction. (fp32/fp64 use MPI_MAX, whose NaN handling MPI leaves open.)
TEST(MpiComm, AllReduce16BitMaxPropagatesNaNAndInfinity) {
  MpiComm comm(MPI_COMM_WORLD);
  const int last = comm.size() - 1;
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    Buffer buf(dtype, 4);
    buf.set(0, comm.rank() == last ? std::nan("") : 1.0);
    buf.set(1, comm.rank() == 0 ? std::nan("") : -2.0);
    buf.set(2, comm.rank() == last ? INFINITY : 3.0);
    buf.set(3, comm.rank() == 0 ? -INFINITY : -5.0 + comm.rank());
    comm.all_reduce(buf.data(), 4, dtype, ReduceOp::kMax)->wait();
    EXPECT_TRUE(std::isnan(buf.get(0))) << dtype_name(dtype) << ": got " << buf.get(0);
    EXPECT_TRUE(std::isnan(buf.get(1))) << dtype_name(dtype) << ": got " << buf.get(1);
    EXPECT_EQ(buf.get(2), INFINITY) << dtype_name(dtype);
    EXPECT_EQ(buf.get(3), comm.size() == 1 ? -INFINITY : -5.0 + last) << dtype_name(dtype);
  }
}

TEST(MpiComm, ReduceScatterGivesEachRankItsReducedBlock) {
  MpiComm comm(MPI_COMM_WORLD);
  for (DType dtype : kAllDtypes) {
    for (ReduceOp op : kAllOps) {
      for (size_t recv_count : {size_t(7), size_t(1), size_t(0)}) {
        const size_t total = recv_count * size_t(comm.size());
        Buffer send(dtype, total);
        for (size_t j = 0; j < total; ++j) send.set(j, value(comm.rank(), j));
        Buffer recv(dtype, recv_count);
        for (size_t i = 0; i < recv_count; ++i) recv.set(i, kSentinel);
        comm.reduce_scatter(send.data(), recv.data(), recv_count, dtype, op)->wait();
        const size_t first = size_t(comm.rank()) * recv_count;
        EXPECT_TRUE(values_match(recv, 0, recv_count, [&](size_t i) {
          return reduce_over_ranks(comm.size(), op, first + i);
        })) << dtype_name(dtype) << " " << op_name(op) << " recv_count " << recv_count;
        // The send buffer is input only.
        EXPECT_TRUE(values_match(send, 0, total, [&](size_t j) { return value(comm.rank(), j); }));
      }
    }
  }
}

TEST(MpiComm, AllGatherOutOfPlace) {
  MpiComm comm(MPI_COMM_WORLD);
  for (DType dtype : kAllDtypes) {
    for (size_t count : {size_t(5), size_t(1), size_t(0)}) {
      Buffer send(dtype, count);
      for (size_t i = 0; i < count; ++i) send.set(i, value(comm.rank(), i));
      Buffer recv(dtype, count * size_t(comm.size()));
      for (size_t j = 0; j < recv.size(); ++j) recv.set(j, kSentinel);
      comm.all_gather(send.data(), recv.data(), count, dtype)->wait();
      for (int r = 0; r < comm.size(); ++r)
        EXPECT_TRUE(values_match(recv, size_t(r) * count, count,
                                 [&](size_t i) { return value(r, i); }))
            << dtype_name(dtype) << " count " << count << " block of rank " << r;
    }
  }
}

TEST(MpiComm, AllGatherInPlace) {
  MpiComm comm(MPI_COMM_WORLD);
  for (DType dtype : kAllDtypes) {
    for (size_t count : {size_t(6), size_t(1), size_t(0)}) {
      // Only this rank's block holds data; the others hold the sentinel until gathered.
      Buffer recv(dtype, count * size_t(comm.size()));
      for (size_t j = 0; j < recv.size(); ++j) recv.set(j, kSentinel);
      const size_t own = size_t(comm.rank()) * count;
      for (size_t i = 0; i < count; ++i) recv.set(own + i, value(comm.rank(), i));
      const void* send = count == 0 ? nullptr : recv.element(own);
      comm.all_gather(send, recv.data(), count, dtype)->wait();
      for (int r = 0; r < comm.size(); ++r)
        EXPECT_TRUE(values_match(recv, size_t(r) * count, count,
                                 [&](size_t i) { return value(r, i); }))
            << dtype_name(dtype) << " count " << count << " block of rank " << r;
    }
  }
}

TEST(MpiComm, BroadcastFromEveryRoot) {
  MpiComm comm(MPI_COMM_WORLD);
  constexpr size_t kCount = 11;
  for (DType dtype : kAllDtypes) {
    for (int root = 0; root < comm.size(); ++root) {
      Buffer buf(dtype, kCount);
      for (size_t i = 0; i < kCount; ++i) buf.set(i, value(comm.rank(), i));
      comm.broadcast(buf.data(), kCount, dtype, root)->wait();
      EXPECT_TRUE(values_match(buf, 0, kCount, [&](size_t i) { return value(root, i); }))
          << dtype_name(dtype) << " root " << root;
    }
    // Count 0 is legal and touches nothing.
    comm.broadcast(nullptr, 0, dtype, comm.size() - 1)->wait();
  }
}

TEST(MpiComm, ZeroCountCollectivesCompleteAtOnce) {
  MpiComm comm(MPI_COMM_WORLD);
  for (DType dtype : kAllDtypes) {
    CommHandle handles[] = {
        comm.all_reduce(nullptr, 0, dtype, ReduceOp::kSum),
        comm.reduce_scatter(nullptr, nullptr, 0, dtype, ReduceOp::kMax),
        comm.all_gather(nullptr, nullptr, 0, dtype),
        comm.broadcast(nullptr, 0, dtype, 0),
    };
    for (auto& handle : handles) {
      EXPECT_TRUE(handle->test());
      handle->wait();
    }
  }
}

// No rank leaves barrier() before every rank has entered it: the other ranks message rank 0
// right after their barrier, so rank 0 must see no message before it enters its own, however
// long it dawdles first.
TEST(MpiComm, BarrierHoldsEveryRankUntilAllArrive) {
  MpiComm comm(MPI_COMM_WORLD);
  constexpr int kTag = 4711;
  for (int round = 0; round < 3; ++round) {
    if (comm.rank() == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      int early = 0;
      MPI_Iprobe(MPI_ANY_SOURCE, kTag, MPI_COMM_WORLD, &early, MPI_STATUS_IGNORE);
      EXPECT_FALSE(early) << "a rank left barrier() before rank 0 entered it (round " << round
                          << ")";
      comm.barrier();
      for (int r = 1; r < comm.size(); ++r) {
        int from = -1;
        MPI_Recv(&from, 1, MPI_INT, MPI_ANY_SOURCE, kTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      }
    } else {
      comm.barrier();
      const int me = comm.rank();
      MPI_Send(&me, 1, MPI_INT, 0, kTag, MPI_COMM_WORLD);
    }
  }
}

// The engine keeps several buckets in flight and completes them in whatever order it needs.
TEST(MpiComm, SeveralRequestsInFlightCompleteInReverseOrder) {
  MpiComm comm(MPI_COMM_WORLD);
  const int size = comm.size();
  const int rank = comm.rank();

  Buffer reduced(DType::kF32, 1000);
  for (size_t i = 0; i < reduced.size(); ++i) reduced.set(i, value(rank, i));
  Buffer scatter_send(DType::kBF16, 7 * size_t(size));
  for (size_t j = 0; j < scatter_send.size(); ++j) scatter_send.set(j, value(rank, j));
  Buffer scatter_recv(DType::kBF16, 7);
  Buffer gathered(DType::kF64, 5 * size_t(size));
  for (size_t i = 0; i < 5; ++i) gathered.set(size_t(rank) * 5 + i, value(rank, i));
  Buffer broadcast(DType::kF16, 9);
  for (size_t i = 0; i < broadcast.size(); ++i) broadcast.set(i, value(rank, i));
  Buffer maxed(DType::kF16, 13);
  for (size_t i = 0; i < maxed.size(); ++i) maxed.set(i, value(rank, i));

  std::vector<CommHandle> handles;
  handles.push_back(comm.all_reduce(reduced.data(), reduced.size(), DType::kF32, ReduceOp::kSum));
  handles.push_back(comm.reduce_scatter(scatter_send.data(), scatter_recv.data(), 7, DType::kBF16,
                                        ReduceOp::kSum));
  handles.push_back(
      comm.all_gather(gathered.element(size_t(rank) * 5), gathered.data(), 5, DType::kF64));
  handles.push_back(comm.broadcast(broadcast.data(), broadcast.size(), DType::kF16, size - 1));
  handles.push_back(comm.all_reduce(maxed.data(), maxed.size(), DType::kF16, ReduceOp::kMax));
  for (auto it = handles.rbegin(); it != handles.rend(); ++it) (*it)->wait();

  EXPECT_TRUE(values_match(reduced, 0, reduced.size(),
                           [&](size_t i) { return reduce_over_ranks(size, ReduceOp::kSum, i); }));
  EXPECT_TRUE(values_match(scatter_recv, 0, 7, [&](size_t i) {
    return reduce_over_ranks(size, ReduceOp::kSum, size_t(rank) * 7 + i);
  }));
  for (int r = 0; r < size; ++r)
    EXPECT_TRUE(values_match(gathered, size_t(r) * 5, 5, [&](size_t i) { return value(r, i); }));
  EXPECT_TRUE(values_match(broadcast, 0, broadcast.size(),
                           [&](size_t i) { return value(size - 1, i); }));
  EXPECT_TRUE(values_match(maxed, 0, maxed.size(),
                           [&](size_t i) { return reduce_over_ranks(size, ReduceOp::kMax, i); }));
}

TEST(MpiComm, TestBecomesTrueWithoutWait) {
  MpiComm comm(MPI_COMM_WORLD);
  Buffer buf(DType::kF64, 4096);
  for (size_t i = 0; i < buf.size(); ++i) buf.set(i, value(comm.rank(), i));
  CommHandle handle = comm.all_reduce(buf.data(), buf.size(), DType::kF64, ReduceOp::kSum);
  // Polling alone must drive the collective to completion (Open MPI progresses it inside
  // MPI_Testall). The deadline only turns a broken test() into a failure instead of a hang;
  // the wait() after it completes the collective either way.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  bool done = false;
  while (!(done = handle->test()) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  EXPECT_TRUE(done) << "test() still false after 120 s";
  handle->wait();
  EXPECT_TRUE(handle->test()) << "test() must stay true once complete";
  EXPECT_TRUE(values_match(buf, 0, buf.size(), [&](size_t i) {
    return reduce_over_ranks(comm.size(), ReduceOp::kSum, i);
  }));
}

TEST(MpiComm, DestroyingARequestWaitsForIt) {
  MpiComm comm(MPI_COMM_WORLD);
  Buffer buf(DType::kF32, 300);
  for (size_t i = 0; i < buf.size(); ++i) buf.set(i, value(comm.rank(), i));
  { CommHandle dropped = comm.all_reduce(buf.data(), buf.size(), DType::kF32, ReduceOp::kMax); }
  EXPECT_TRUE(values_match(buf, 0, buf.size(), [&](size_t i) {
    return reduce_over_ranks(comm.size(), ReduceOp::kMax, i);
  }));
}

// Tests use an MpiComm over MPI_COMM_SELF for single-rank reference runs inside an MPI job:
// every collective is then a copy or leaves the data as it is, bit for bit.
TEST(MpiComm, SelfCommIsOneRankAndCollectivesAreIdentities) {
  MpiComm self(MPI_COMM_SELF);
  EXPECT_EQ(self.rank(), 0);
  EXPECT_EQ(self.size(), 1);
  constexpr size_t kCount = 23;
  for (DType dtype : kAllDtypes) {
    Buffer original(dtype, kCount);
    for (size_t i = 0; i < kCount; ++i) original.set(i, 0.1 * double(i) - 1.3);

    for (ReduceOp op : kAllOps) {
      Buffer buf = original;
      self.all_reduce(buf.data(), kCount, dtype, op)->wait();
      EXPECT_EQ(buf.bytes(), original.bytes())
          << dtype_name(dtype) << " all_reduce " << op_name(op);

      Buffer recv(dtype, kCount);
      self.reduce_scatter(original.data(), recv.data(), kCount, dtype, op)->wait();
      EXPECT_EQ(recv.bytes(), original.bytes())
          << dtype_name(dtype) << " reduce_scatter " << op_name(op);
    }
    Buffer gathered(dtype, kCount);
    self.all_gather(original.data(), gathered.data(), kCount, dtype)->wait();
    EXPECT_EQ(gathered.bytes(), original.bytes()) << dtype_name(dtype) << " all_gather";
    self.all_gather(gathered.data(), gathered.data(), kCount, dtype)->wait();  // in place
    EXPECT_EQ(gathered.bytes(), original.bytes()) << dtype_name(dtype) << " all_gather in place";
    Buffer buf = original;
    self.broadcast(buf.data(), kCount, dtype, 0)->wait();
    EXPECT_EQ(buf.bytes(), original.bytes()) << dtype_name(dtype) << " broadcast";
  }
  self.barrier();
}

// Counts above max_elements_per_call (2^30 by default, for MPI's int counts) are split into
// several MPI calls under one request. A threshold of 1000 reaches that path with 10007 elements:
// ten full pieces and a ragged tail of 7.
TEST(MpiComm, LargeAllReduceAndBroadcastAreSplitIntoPieces) {
  MpiComm comm(MPI_COMM_WORLD, 1000);
  constexpr size_t kCount = 10007;
  for (DType dtype : kAllDtypes) {
    Buffer buf(dtype, kCount);
    for (size_t i = 0; i < kCount; ++i) buf.set(i, value(comm.rank(), i));
    comm.all_reduce(buf.data(), kCount, dtype, ReduceOp::kSum)->wait();
    EXPECT_TRUE(values_match(buf, 0, kCount, [&](size_t i) {
      return reduce_over_ranks(comm.size(), ReduceOp::kSum, i);
    })) << dtype_name(dtype) << " all_reduce";

    const int root = comm.size() - 1;
    for (size_t i = 0; i < kCount; ++i) buf.set(i, value(comm.rank(), i));
    comm.broadcast(buf.data(), kCount, dtype, root)->wait();
    EXPECT_TRUE(values_match(buf, 0, kCount, [&](size_t i) { return value(root, i); }))
        << dtype_name(dtype) << " broadcast";
  }
  // The smallest threshold: one MPI call per element.
  MpiComm per_element(MPI_COMM_WORLD, 1);
  Buffer buf(DType::kF32, 5);
  for (size_t i = 0; i < buf.size(); ++i) buf.set(i, value(comm.rank(), i));
  per_element.all_reduce(buf.data(), buf.size(), DType::kF32, ReduceOp::kMax)->wait();
  EXPECT_TRUE(values_match(buf, 0, buf.size(), [&](size_t i) {
    return reduce_over_ranks(comm.size(), ReduceOp::kMax, i);
  }));
}

// Misuse is caught before any MPI call, identically on every rank, so no rank is left inside a
// collective.
TEST(MpiComm, RejectsMisuseBeforeCallingMpi) {
  EXPECT_THROW(MpiComm(MPI_COMM_WORLD, 0), Error);
  EXPECT_THROW(MpiComm(MPI_COMM_WORLD, size_t(INT_MAX) + 1), Error);
  EXPECT_THROW(MpiComm(MPI_COMM_NULL), Error);

  MpiComm comm(MPI_COMM_WORLD);
  // reduce_scatter and all_gather are not split: a count past MPI's int range must say so.
  // The buffers are never touched: the check fails first.
  float dummy_send[1] = {0.0f};
  float dummy_recv[1] = {0.0f};
  const size_t too_many = size_t(INT_MAX) + 1;
  try {
    comm.reduce_scatter(dummy_send, dummy_recv, too_many, DType::kF32, ReduceOp::kSum);
    ADD_FAILURE() << "reduce_scatter accepted " << too_many << " elements per rank";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("int element count"), std::string::npos) << e.what();
  }
  try {
    comm.all_gather(dummy_send, dummy_recv, too_many, DType::kF32);
    ADD_FAILURE() << "all_gather accepted " << too_many << " elements per rank";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("int element count"), std::string::npos) << e.what();
  }
  EXPECT_THROW(comm.broadcast(dummy_recv, 1, DType::kF32, comm.size()), Error);
  EXPECT_THROW(comm.broadcast(dummy_recv, 1, DType::kF32, -1), Error);
  // reduce_scatter's send and recv must not overlap.
  Buffer send(DType::kF32, 4 * size_t(comm.size()));
  EXPECT_THROW(comm.reduce_scatter(send.data(), send.data(), 4, DType::kF32, ReduceOp::kSum),
               Error);
  // all_gather's send may alias recv only as this rank's own block.
  if (comm.size() > 1) {
    const size_t wrong_block = size_t((comm.rank() + 1) % comm.size()) * 4;
    EXPECT_THROW(comm.all_gather(send.element(wrong_block), send.data(), 4, DType::kF32), Error);
  }
}

TEST(MpiCheck, ReportsExpressionLocationRankAndMpiErrorString) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const std::string rank_text = "rank " + std::to_string(rank);

  // A code handed over directly.
  try {
    ZT_MPI_CHECK(MPI_ERR_COUNT);
    ADD_FAILURE() << "ZT_MPI_CHECK(MPI_ERR_COUNT) did not throw";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(detail::mpi_error_string(MPI_ERR_COUNT)), std::string::npos) << what;
    EXPECT_NE(what.find("`MPI_ERR_COUNT`"), std::string::npos) << what;
    EXPECT_NE(what.find("test_mpi_comm.cpp:"), std::string::npos) << what;
    EXPECT_NE(what.find(rank_text), std::string::npos) << what;
  }

  // A real failing call: MPI returns the code only under MPI_ERRORS_RETURN, set here on
  // MPI_COMM_SELF alone and restored afterwards. Rank 1 does not exist in MPI_COMM_SELF.
  MPI_Errhandler previous = MPI_ERRHANDLER_NULL;
  MPI_Comm_get_errhandler(MPI_COMM_SELF, &previous);
  MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
  std::string what;
  try {
    int payload = 0;
    ZT_MPI_CHECK(MPI_Send(&payload, 1, MPI_INT, 1, 0, MPI_COMM_SELF));
  } catch (const Error& e) {
    what = e.what();
  }
  MPI_Comm_set_errhandler(MPI_COMM_SELF, previous);
  MPI_Errhandler_free(&previous);
  EXPECT_NE(what.find("MPI_Send(&payload, 1, MPI_INT, 1, 0, MPI_COMM_SELF)"), std::string::npos)
      << what;
  EXPECT_NE(what.find(detail::mpi_error_string(MPI_ERR_RANK)), std::string::npos) << what;
  EXPECT_NE(what.find(rank_text), std::string::npos) << what;
}

}  // namespace
}  // namespace zt
