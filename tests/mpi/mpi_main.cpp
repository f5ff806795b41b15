// GoogleTest main for the MPI suites: initialises MPI, runs every test on every rank, and makes
// the exit code non-zero on every rank when any rank failed.
//
// Every rank runs the same tests in the same order, so the collectives inside them pair up.
// Rank 0 prints gtest's usual report; the other ranks print only their failures, each line
// prefixed with the rank, so an N-rank log reads like one run plus whatever went wrong elsewhere.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <ctime>
#include <sstream>
#include <string>

#include "runtime/error.h"

namespace {

class RankFailurePrinter final : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : prefix_("[rank " + std::to_string(rank) + "] ") {}

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::ostringstream os;
    os << (result.file_name() ? result.file_name() : "unknown file") << ":"
       << result.line_number() << ": Failure\n"
       << result.message();
    print(os.str());
  }

  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed())
      print(std::string("FAILED ") + info.test_suite_name() + "." + info.name());
  }

 private:
  // One write per report so lines of different ranks interleave whole.
  void print(const std::string& text) const {
    std::string out;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) out += prefix_ + line + "\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
  }

  std::string prefix_;
};

}  // namespace

int main(int argc, char** argv) {
  // FUNNELED, as launch/ asks for: only this thread calls MPI, OpenMP threads never do.
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    std::fprintf(stderr, "zt_tests_mpi: MPI_Init_thread failed\n");
    return 1;
  }
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  zt::set_process_rank(rank);
  if (provided < MPI_THREAD_FUNNELED) {
    std::fprintf(stderr, "zt_tests_mpi: MPI provides thread level %d, below MPI_THREAD_FUNNELED\n",
                 provided);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

  ::testing::InitGoogleTest(&argc, argv);
  // --gtest_shuffle takes a time-based seed per process unless given one: every rank uses rank
  // 0's, or the ranks would run their tests (and collectives) in different orders and hang.
#if defined(GTEST_FLAG_GET) && defined(GTEST_FLAG_SET)
  int seed = GTEST_FLAG_GET(random_seed);
  if (rank == 0 && seed == 0) seed = static_cast<int>(std::time(nullptr) % 99999) + 1;  // 1..99999
  MPI_Bcast(&seed, 1, MPI_INT, 0, MPI_COMM_WORLD);
  GTEST_FLAG_SET(random_seed, seed);
#endif

  if (rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }

  const int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any_failed && !failed)
    std::printf("[rank 0] passed here, but another rank failed: see its [rank N] lines\n");
  std::fflush(stdout);
  MPI_Finalize();
  return any_failed;
}
