// Pinning the OpenMP threads of one rank to its own share of the process's cores, so ranks that
// share a host (one per GPU) do not run their CPU AdamW threads on the same cores.
#pragma once

#include <vector>

namespace zt::optim {

// A contiguous run [first, first + count) of indices into a rank's list of usable CPUs.
struct CpuGroup {
  int first = 0;
  int count = 0;
  bool operator==(const CpuGroup&) const = default;
};

// The share of local_rank among local_size ranks of num_cpus CPUs: contiguous groups, the first
// num_cpus % local_size groups one CPU larger. With fewer CPUs than ranks every rank gets one
// CPU, shared round-robin (rank r gets CPU r % num_cpus). Pure arithmetic, for tests.
CpuGroup cpu_group_for_rank(int num_cpus, int local_rank, int local_size);

// The CPU ids this process may run on (sched_getaffinity), ascending.
std::vector<int> allowed_cpus();

// Splits allowed_cpus() into local_size contiguous groups and pins this rank's OpenMP threads to
// its group: omp_set_num_threads(group size), then, inside one parallel region of that size,
// thread t > 0 is pinned to the group's CPU t alone. The calling (master) thread is pinned to the
// whole group rather than one CPU, because threads it creates later (OpenMP workers for a team
// of another size, CUDA, MPI, I/O) inherit its mask. An explicit OMP_NUM_THREADS smaller than
// the group wins. Call once per process, early (before other threads start), from the thread
// that runs the optimizer. Returns the thread count set (Linux only: sched_setaffinity).
int pin_threads_for_local_rank(int local_rank, int local_size);

}  // namespace zt::optim
