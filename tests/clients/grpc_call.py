"""One call to a wormdb node with the real Python gRPC client (grpcio), for
the Rust tests: stubs compiled at run time from proto/wormdb.proto with
grpc_tools, TLS from ssl_channel_credentials, a bearer token as metadata.

usage: grpc_call.py ADDR write|query [--ca PEM] [--cert PEM --key PEM]
                    [--token SECRET] [--body TEXT] [--server-name NAME]
Prints one JSON line: {"code": "OK"|status name, "details": ..., "result": ...}.
"""

import argparse
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc


def stubs():
    proto_dir = os.path.join(os.path.dirname(__file__), "..", "..", "proto")
    out = tempfile.mkdtemp(prefix="wormdb-stubs-")
    status = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                          os.path.join(proto_dir, "wormdb.proto")])
    if status != 0:
        sys.exit(f"protoc failed: {status}")
    sys.path.insert(0, out)
    import wormdb_pb2
    import wormdb_pb2_grpc
    return wormdb_pb2, wormdb_pb2_grpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("addr")
    parser.add_argument("call", choices=["write", "query"])
    parser.add_argument("--ca")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--token")
    parser.add_argument("--body", default="from grpcio")
    parser.add_argument("--server-name")
    args = parser.parse_args()
    pb, pb_grpc = stubs()
    read = lambda path: open(path, "rb").read() if path else None
    if args.ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=read(args.ca), private_key=read(args.key),
                                                   certificate_chain=read(args.cert))
        options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
        channel = grpc.secure_channel(args.addr, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.addr)
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    stub = pb_grpc.WormIngestStub(channel)
    try:
        if args.call == "write":
            entry = pb.LogEntry(body=args.body.encode(), tags={"client": "grpcio"})
            reply = stub.Write(pb.WriteRequest(entries=[entry]), metadata=metadata, timeout=10)
            result = {"shard": reply.shard, "first_seq": reply.first_seq, "last_seq": reply.last_seq}
        else:
            request = pb.QueryRequest(limit=1000)
            result = [entry.body.decode() for entry in stub.Query(request, metadata=metadata, timeout=10)]
        print(json.dumps({"code": "OK", "details": "", "result": result}))
    except grpc.RpcError as error:
        print(json.dumps({"code": error.code().name, "details": error.details(), "result": None}))


if __name__ == "__main__":
    main()
