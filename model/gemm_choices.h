// GEMM algorithm choices: for each GEMM problem (a text key that model/cuda/gemm.cu makes from
// the shape, dtypes, epilogue and alignments), which of cuBLASLt's heuristic candidates runs.
// `zerotrain bench --tune-gemms FILE`, or a training run with train.gemm_choices = FILE, times the
// candidates and writes the file; such a run, or a process with ZT_GEMM_CHOICES=FILE in its
// environment, runs them. The same file gives the same algorithms, hence the same bits, in every
// run. Plain C++: the format is tested without a GPU.
#pragma once

#include <map>
#include <string>

namespace zt::model {

struct GemmChoices {
  std::string device;   // the GPU the candidates were timed on (cudaDeviceProp::name)
  std::string library;  // the cuBLASLt version (cublasLtGetVersion)
  std::map<std::string, int> index;  // problem key -> candidate index (0: the heuristic's pick)
};

// The file's text:
//   # comment lines
//   device <name>
//   cublaslt <version>
//   choice <index> <problem key>
std::string format_gemm_choices(const GemmChoices& choices);
// Parses format_gemm_choices' text; `where` (the file's path) starts every error, with the line.
GemmChoices parse_gemm_choices(const std::string& text, const std::string& where);

GemmChoices read_gemm_choices(const std::string& path);
void write_gemm_choices(const std::string& path, const GemmChoices& choices);

}  // namespace zt::model
