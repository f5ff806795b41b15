// Per-rank CPU groups and OpenMP thread pinning (optim/cpu_affinity.h).
#include "optim/cpu_affinity.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>

#include "runtime/error.h"

namespace zt::optim {

CpuGroup cpu_group_for_rank(int num_cpus, int local_rank, int local_size) {
  ZT_CHECK(num_cpus >= 1, "cpu_group_for_rank: need at least one CPU, got ", num_cpus);
  ZT_CHECK(local_size >= 1 && local_rank >= 0 && local_rank < local_size,
           "cpu_group_for_rank: local rank ", local_rank, " of ", local_size);
  if (num_cpus < local_size) return {local_rank % num_cpus, 1};
  const int base = num_cpus / local_size;
  const int extra = num_cpus % local_size;  // the first `extra` groups get base + 1
  const int first = local_rank * base + std::min(local_rank, extra);
  return {first, base + (local_rank < extra ? 1 : 0)};
}

std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  ZT_CHECK(sched_getaffinity(0, sizeof(set), &set) == 0, "sched_getaffinity failed");
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
  }
  return cpus;
}

int pin_threads_for_local_rank(int local_rank, int local_size) {
  const std::vector<int> cpus = allowed_cpus();
  ZT_CHECK(!cpus.empty(), "pin_threads_for_local_rank: the process may run on no CPU");
  const CpuGroup group = cpu_group_for_rank(int(cpus.size()), local_rank, local_size);
  int threads = group.count;
  if (std::getenv("OMP_NUM_THREADS") != nullptr) threads = std::min(threads, omp_get_max_threads());
  threads = std::max(threads, 1);

  cpu_set_t whole;
  CPU_ZERO(&whole);
  for (int k = 0; k < group.count; ++k) CPU_SET(cpus[size_t(group.first + k)], &whole);
  // The master first, so the workers libgomp creates below inherit the group, not all CPUs.
  ZT_CHECK(sched_setaffinity(0, sizeof(whole), &whole) == 0,
           "sched_setaffinity failed for the master thread");
  omp_set_num_threads(threads);
  bool ok = true;
#pragma omp parallel num_threads(threads) reduction(&& : ok)
  {
    const int t = omp_get_thread_num();
    if (t > 0) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpus[size_t(group.first + t % group.count)], &one);
      ok = sched_setaffinity(0, sizeof(one), &one) == 0;  // 0: the calling thread
    }
  }
  ZT_CHECK(ok, "sched_setaffinity failed for an OpenMP thread");
  return threads;
}

}  // namespace zt::optim
