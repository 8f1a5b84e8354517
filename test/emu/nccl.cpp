// nccl.cpp: the NCCL subset bigs uses, emulated over MPI between the ranks
// of an mpirun (test infrastructure; never in the product). Compiled only
// with -DBIGS_MPI, by mpicxx.
//
// Each operation executes eagerly at its call (for a group: at the
// outermost ncclGroupEnd), in stream order: first emu::drain(stream) runs
// the work the operation depends on (the stream's queue and whatever it
// waits for), then the transfer happens over MPI. So a missing
// cudaStreamWaitEvent before a send shows: the kernel that should have
// filled the buffer has not run, and poison (or stale data) goes out.
// Checked as NCCL documents (NCCL API, "Point To Point Communication
// Functions", "Collective Communication Functions"): peer and root in
// [0, nranks), buffers in device memory and large enough, a known data type;
// otherwise ncclInvalidArgument and one "emu: <call>: ..." line.
#ifndef BIGS_MPI
#error "test/emu/nccl.cpp emulates NCCL over MPI: compile it with mpicxx -DBIGS_MPI"
#endif
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <unistd.h>
#include <vector>

#include "emu.h"

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, nranks = 0;
  std::vector<int> world_of;  // NCCL rank -> rank in mpi
};

namespace {

constexpr int kTagP2P = 0x4e01, kTagBcast = 0x4e02;
constexpr char kMagic[8] = {'e', 'm', 'u', 'n', 'c', 'c', 'l', 0};

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
  }
}

MPI_Datatype mpi_type(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: return MPI_INT8_T;
    case ncclUint8: return MPI_UINT8_T;
    case ncclInt32: return MPI_INT32_T;
    case ncclUint32: return MPI_UINT32_T;
    case ncclInt64: return MPI_INT64_T;
    case ncclUint64: return MPI_UINT64_T;
    case ncclFloat32: return MPI_FLOAT;
    case ncclFloat64: return MPI_DOUBLE;
    default: return MPI_DATATYPE_NULL;  // fp16, bf16, fp8: no MPI reduction here
  }
}

enum class Kind { Send, Recv, Bcast };
struct P2P {
  Kind kind;
  const void* send;
  void* recv;
  size_t bytes;
  int peer;  // or root
  ncclComm_t comm;
  cudaStream_t stream;
};

int g_depth = 0;              // ncclGroupStart nesting
std::vector<P2P> g_group;     // operations of the open group

ncclResult_t bad(const char* call, const char* what) {
  emu::fail(call, "%s (ncclInvalidArgument)", what);
  return ncclInvalidArgument;
}

ncclResult_t check_comm(const char* call, ncclComm_t comm) {
  if (!comm || comm->mpi == MPI_COMM_NULL) return bad(call, "comm is null or destroyed");
  return ncclSuccess;
}

// buf must hold bytes of device memory (count 0: anything).
ncclResult_t check_buf(const char* call, const void* buf, size_t bytes, const char* which) {
  if (bytes == 0) return ncclSuccess;
  if (!emu::in_device(buf, bytes)) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s %p: %zu bytes there are not device memory (a host pointer, or past the end)",
             which, buf, bytes);
    return bad(call, msg);
  }
  return ncclSuccess;
}

// MPI counts are int: large transfers go in pieces (matched in order).
void post(std::vector<MPI_Request>& reqs, bool send, const void* buf, size_t bytes, int peer, int tag, MPI_Comm c) {
  const size_t chunk = (size_t)1 << 30;
  for (size_t off = 0; off < bytes; off += chunk) {  // count 0: nothing moves, on either side
    int n = (int)std::min(chunk, bytes - off);
    MPI_Request r;
    if (send) MPI_Isend((const char*)buf + off, n, MPI_BYTE, peer, tag, c, &r);
    else MPI_Irecv((char*)buf + off, n, MPI_BYTE, peer, tag, c, &r);
    reqs.push_back(r);
  }
}

// Runs a list of point-to-point operations (and broadcasts): drain each
// stream once, post everything, wait for everything.
ncclResult_t run(std::vector<P2P>& ops) {
  std::vector<cudaStream_t> drained;
  for (const P2P& op : ops) {
    bool seen = false;
    for (cudaStream_t s : drained) seen |= s == op.stream;
    if (!seen) {
      emu::drain(op.stream);
      drained.push_back(op.stream);
    }
  }
  std::vector<MPI_Request> reqs;
  for (const P2P& op : ops) {
    MPI_Comm c = op.comm->mpi;
    int peer = op.comm->world_of[op.peer];
    if (op.kind == Kind::Send) post(reqs, true, op.send, op.bytes, peer, kTagP2P, c);
    else if (op.kind == Kind::Recv) post(reqs, false, op.recv, op.bytes, peer, kTagP2P, c);
    else if (op.comm->rank == op.peer) {  // broadcast root
      if (op.recv != op.send && op.bytes) memmove(op.recv, op.send, op.bytes);
      for (int q = 0; q < op.comm->nranks; q++)
        if (q != op.peer) post(reqs, true, op.send, op.bytes, op.comm->world_of[q], kTagBcast, c);
    } else {
      post(reqs, false, op.recv, op.bytes, peer, kTagBcast, c);
    }
  }
  int rc = MPI_Waitall((int)reqs.size(), reqs.data(), MPI_STATUSES_IGNORE);
  ops.clear();
  return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

ncclResult_t submit(P2P op) {
  g_group.push_back(op);
  if (g_depth > 0) return ncclSuccess;
  return run(g_group);
}

}  // namespace

extern "C" {

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

// The id: a magic, this process's pid and the time; ranks compare it at
// ncclCommInitRank.
ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return bad("ncclGetUniqueId", "uniqueId is null");
  memset(id, 0, sizeof *id);
  memcpy(id->internal, kMagic, sizeof kMagic);
  int64_t stamp[2] = {(int64_t)getpid(), (int64_t)time(nullptr)};
  static int64_t counter = 0;
  int64_t c = ++counter;
  memcpy(id->internal + 8, stamp, sizeof stamp);
  memcpy(id->internal + 24, &c, sizeof c);
  return ncclSuccess;
}

// All ranks of MPI_COMM_WORLD must call it together (the emulation's
// limit: a communicator is the whole world, in any rank order).
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  const char* call = "ncclCommInitRank";
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) return bad(call, "MPI is not initialised (the emulated NCCL runs over MPI)");
  if (!comm) return bad(call, "comm is null");
  if (memcmp(id.internal, kMagic, sizeof kMagic) != 0) return bad(call, "the id is not from ncclGetUniqueId");
  int wsize, wrank;
  MPI_Comm_size(MPI_COMM_WORLD, &wsize);
  MPI_Comm_rank(MPI_COMM_WORLD, &wrank);
  if (nranks != wsize) {
    char msg[128];
    snprintf(msg, sizeof msg, "nranks %d: the emulation needs every one of the %d MPI ranks", nranks, wsize);
    return bad(call, msg);
  }
  if (rank < 0 || rank >= nranks) return bad(call, "rank out of [0, nranks)");
  ncclComm* c = new ncclComm;
  MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi);
  c->rank = rank;
  c->nranks = nranks;
  c->world_of.assign(nranks, -1);
  std::vector<int> ranks(nranks);
  MPI_Allgather(&rank, 1, MPI_INT, ranks.data(), 1, MPI_INT, c->mpi);
  std::vector<char> ids((size_t)nranks * sizeof id.internal);
  MPI_Allgather(id.internal, (int)sizeof id.internal, MPI_BYTE, ids.data(), (int)sizeof id.internal, MPI_BYTE, c->mpi);
  bool ok = true;
  for (int w = 0; w < nranks; w++) {
    if (c->world_of[ranks[w]] != -1) ok = false;  // two processes claim one rank
    c->world_of[ranks[w]] = w;
    if (memcmp(ids.data() + (size_t)w * sizeof id.internal, id.internal, sizeof id.internal) != 0) ok = false;
  }
  if (!ok) {
    MPI_Comm_free(&c->mpi);
    delete c;
    return bad(call, "ranks disagree: a rank claimed twice, or different ids");
  }
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  if (!g_group.empty()) {
    for (size_t i = 0; i < g_group.size(); i++)
      if (g_group[i].comm == comm) return bad("ncclCommDestroy", "operations of an open group still use comm");
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm->mpi != MPI_COMM_NULL) MPI_Comm_free(&comm->mpi);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (ncclResult_t r = check_comm("ncclCommCount", comm)) return r;
  if (!count) return bad("ncclCommCount", "count is null");
  *count = comm->nranks;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (ncclResult_t r = check_comm("ncclCommUserRank", comm)) return r;
  if (!rank) return bad("ncclCommUserRank", "rank is null");
  *rank = comm->rank;
  return ncclSuccess;
}

// NCCL User Guide, "Group Calls": operations between ncclGroupStart and
// ncclGroupEnd are issued together at the outermost ncclGroupEnd (which is
// what lets a rank send to and receive from its peers without deadlock).
ncclResult_t ncclGroupStart() {
  g_depth++;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (g_depth == 0) {
    emu::fail("ncclGroupEnd", "no ncclGroupStart open (ncclInvalidUsage)");
    return ncclInvalidUsage;
  }
  if (--g_depth > 0) return ncclSuccess;
  return run(g_group);
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  const char* call = "ncclSend";
  if (ncclResult_t r = check_comm(call, comm)) return r;
  size_t ts = type_size(datatype);
  if (!ts) return bad(call, "unknown datatype");
  if (peer < 0 || peer >= comm->nranks) return bad(call, "peer out of [0, nranks)");
  if (ncclResult_t r = check_buf(call, sendbuff, count * ts, "sendbuff")) return r;
  return submit(P2P{Kind::Send, sendbuff, nullptr, count * ts, peer, comm, stream});
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  const char* call = "ncclRecv";
  if (ncclResult_t r = check_comm(call, comm)) return r;
  size_t ts = type_size(datatype);
  if (!ts) return bad(call, "unknown datatype");
  if (peer < 0 || peer >= comm->nranks) return bad(call, "peer out of [0, nranks)");
  if (ncclResult_t r = check_buf(call, recvbuff, count * ts, "recvbuff")) return r;
  return submit(P2P{Kind::Recv, nullptr, recvbuff, count * ts, peer, comm, stream});
}

// NCCL API, ncclBroadcast: root's sendbuff to every rank's recvbuff; in
// place when sendbuff == recvbuff (sendbuff is only read on the root).
ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  const char* call = "ncclBroadcast";
  if (ncclResult_t r = check_comm(call, comm)) return r;
  size_t ts = type_size(datatype);
  if (!ts) return bad(call, "unknown datatype");
  if (root < 0 || root >= comm->nranks) return bad(call, "root out of [0, nranks)");
  if (comm->rank == root)
    if (ncclResult_t r = check_buf(call, sendbuff, count * ts, "sendbuff")) return r;
  if (ncclResult_t r = check_buf(call, recvbuff, count * ts, "recvbuff")) return r;
  return submit(P2P{Kind::Bcast, sendbuff, recvbuff, count * ts, root, comm, stream});
}

// Collectives other than broadcast run blocking at the call (inside a
// group: after the group's point-to-point operations queued so far).
ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  const char* call = "ncclAllReduce";
  if (ncclResult_t r = check_comm(call, comm)) return r;
  size_t ts = type_size(datatype);
  if (!ts) return bad(call, "unknown datatype");
  MPI_Datatype mt = mpi_type(datatype);
  if (mt == MPI_DATATYPE_NULL) return bad(call, "datatype not emulated (fp16, bf16, fp8)");
  MPI_Op mo = op == ncclSum ? MPI_SUM : op == ncclProd ? MPI_PROD : op == ncclMax ? MPI_MAX : op == ncclMin ? MPI_MIN
                                                                                                             : MPI_OP_NULL;
  if (mo == MPI_OP_NULL) return bad(call, "reduction not emulated (ncclAvg, custom)");
  if (ncclResult_t r = check_buf(call, sendbuff, count * ts, "sendbuff")) return r;
  if (ncclResult_t r = check_buf(call, recvbuff, count * ts, "recvbuff")) return r;
  if (count > (size_t)INT_MAX) return bad(call, "count above INT_MAX not emulated");
  if (ncclResult_t r = run(g_group)) return r;
  emu::drain(stream);
  int rc = MPI_Allreduce(sendbuff == recvbuff ? MPI_IN_PLACE : sendbuff, recvbuff, (int)count, mt, mo, comm->mpi);
  return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  const char* call = "ncclAllGather";
  if (ncclResult_t r = check_comm(call, comm)) return r;
  size_t ts = type_size(datatype);
  if (!ts) return bad(call, "unknown datatype");
  size_t bytes = sendcount * ts;
  if (ncclResult_t r = check_buf(call, sendbuff, bytes, "sendbuff")) return r;
  if (ncclResult_t r = check_buf(call, recvbuff, bytes * comm->nranks, "recvbuff")) return r;
  if (bytes > (size_t)INT_MAX) return bad(call, "more than INT_MAX bytes a rank not emulated");
  if (ncclResult_t r = run(g_group)) return r;
  emu::drain(stream);
  // NCCL ranks may be in another order than the MPI ranks: gather by MPI
  // rank into a temporary, then place by NCCL rank.
  std::vector<char> tmp(bytes * comm->nranks);
  MPI_Allgather(sendbuff, (int)bytes, MPI_BYTE, tmp.data(), (int)bytes, MPI_BYTE, comm->mpi);
  for (int q = 0; q < comm->nranks; q++)
    memcpy((char*)recvbuff + (size_t)q * bytes, tmp.data() + (size_t)comm->world_of[q] * bytes, bytes);
  return ncclSuccess;
}

}  // extern "C"
