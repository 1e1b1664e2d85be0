// The CRF layer's CUDA lattice filter (cuda/lattice_op.cuh) run by the host emulation, as a program
// (tests/test_crf_layer_cuda.py builds it with g++): argv B H W c gaussian_sxy bilateral_sxy bilateral_srgb
// adjoint rgb.bin in0.bin in1.bin out0.bin out1.bin [vals_budget]; each in/out is (B, H*W, c) float32; in1 =
// in0's path: one shared input (the layer's forward); out1 = out0's path: one output, the sum (the layer's
// adjoint); vals_budget: bytes of vertex values per apply pass. Prints M M0 pieces and the work, scratch,
// fixed, vertex, build-tmp and apply-tmp bytes; exit 4 with the error on stderr.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/host_exec.cuh"
#include "cuda/lattice_op.cuh"

namespace {

// Poisoned (anything read before written shows up as garbage), 256-byte aligned.
struct HostBuffer {
  std::vector<uint64_t> mem;
  void* p;
  explicit HostBuffer(size_t bytes) : mem(bytes / 8 + 64) {
    std::memset(mem.data(), 0x7F, mem.size() * 8);
    p = (void*)(((uintptr_t)mem.data() + 255) / 256 * 256);
  }
};

bool read_file(const char* path, void* dst, size_t bytes) {
  FILE* f = std::fopen(path, "rb");
  const bool ok = f && std::fread(dst, 1, bytes, f) == bytes;
  if (f) std::fclose(f);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace pyseg::cuda;
  if (argc != 14 && argc != 15) return 2;
  const long B = atol(argv[1]), H = atol(argv[2]), W = atol(argv[3]);
  const int c = atoi(argv[4]);
  const bool adjoint = atoi(argv[8]) != 0, shared = std::string(argv[10]) == argv[11];
  const bool summed = std::string(argv[12]) == argv[13];
  const size_t nv = (size_t)(B * H * W * c), nr = (size_t)(B * H * W * 3);
  std::vector<float> in0(nv), in1(nv), out0(nv, -7.0f), out1(nv, -7.0f);
  std::vector<uint8_t> rgb(nr);
  if (!read_file(argv[9], rgb.data(), nr) || !read_file(argv[10], in0.data(), nv * 4) ||
      !read_file(argv[11], in1.data(), nv * 4))
    return 3;
  try {
    LatticeOpState st = make_lattice_op(B, H, W, (float)atof(argv[5]), (float)atof(argv[6]), (float)atof(argv[7]));
    if (argc == 15) st.vals_budget = (size_t)atoll(argv[14]);
    HostBuffer work(work_bytes(st)), scratch(scratch_bytes(st)), fixed(fixed_bytes(st));
    carve_work(st, work.p);
    carve_scratch(st, scratch.p);
    carve_fixed(st, fixed.p);
    HostExec ex;
    lattice_op_build_vertices(ex, st, rgb.data());
    set_counts(st, st.bf.counts);  // the read-back
    std::memset(work.mem.data(), 0x7F, work.mem.size() * 8);  // freed by the caller here: poison it
    HostBuffer vertex(vertex_bytes(st)), build_tmp(build_tmp_bytes(st));
    carve_vertex(st, vertex.p);
    lattice_op_build_finish(ex, st, build_tmp.p);
    const size_t apply_bytes = apply_tmp_bytes(st, c, !shared);
    HostBuffer tmp(apply_bytes);
    lattice_op_apply(ex, st, in0.data(), shared ? in0.data() : in1.data(), c, out0.data(),
                     summed ? out0.data() : out1.data(), c, c, adjoint, tmp.p);
    std::printf("%d %d %d %zu %zu %zu %zu %zu %zu\n", st.m, st.m0, st.pieces, work_bytes(st), scratch_bytes(st),
                fixed_bytes(st), vertex_bytes(st), build_tmp_bytes(st), apply_bytes);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 4;
  }
  for (int k = 0; k < (summed ? 1 : 2); ++k) {
    FILE* f = std::fopen(argv[12 + k], "wb");
    if (!f) return 3;
    std::fwrite((k ? out1 : out0).data(), 4, nv, f);
    std::fclose(f);
  }
  return 0;
}
