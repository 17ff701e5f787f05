#!/usr/bin/env python3
"""A small wallet client of remit.v1.Remittances, written against the Python
stubs that grpcio-tools generates from proto/remit/v1/remittances.proto.

It quotes a send amount, creates a remittance between two natural persons,
watches it until a terminal status and prints ONE JSON object on stdout:

    {"uetr", "status", "send_amount", "send_currency", "receive_amount",
     "receive_currency", "fees_total", "rate", "quote_send_amount",
     "quote_receive_amount", "invalid_amount_field"}

`invalid_amount_field` is the `remit-field` trailing metadata of a quote for
"10.001" (one digit past the minor unit), which must fail with
INVALID_ARGUMENT; it is null when the call did not fail that way.

Exit status: 0 when the remittance completed, 1 otherwise (any other terminal
status, no terminal status before --timeout, or a failed call).

Run through tests/python/run_client.sh, which makes a venv and generates the
stubs; by hand: `remit_client.py --stubs DIR --url 127.0.0.1:8100 --key K ...`
with DIR holding remit/v1/remittances_pb2.py and remittances_pb2_grpc.py.
"""

import argparse
import json
import sys
import time
import uuid

TERMINAL = {"completed", "returned", "rejected", "expired", "cancelled"}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="gateway API address, host:port (plaintext h2c)")
    parser.add_argument("--key", required=True, help="API key, sent as `authorization: Bearer <key>`")
    parser.add_argument("--source-country", required=True, help="ISO 3166 alpha-2, e.g. US")
    parser.add_argument("--source-currency", required=True, help="ISO 4217, e.g. USD")
    parser.add_argument("--destination-country", required=True, help="ISO 3166 alpha-2, e.g. PH")
    parser.add_argument("--destination-currency", required=True, help="ISO 4217, e.g. PHP")
    parser.add_argument("--amount", required=True, help="send amount in the source currency, e.g. 100.00")
    parser.add_argument("--account", default="0123456789", help="beneficiary account number")
    parser.add_argument("--stubs", required=True, help="directory holding the generated remit/v1 modules")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a terminal status")
    return parser.parse_args(argv)


def log(message):
    print(f"remit_client: {message}", file=sys.stderr, flush=True)


def person(pb, primary, secondary, account, country):
    """A natural person with an `account_number` account."""
    return pb.Party(
        natural_person=pb.NaturalPersonName(primary_name=primary, secondary_name=secondary),
        account=pb.Account(scheme="account_number", value=account),
        country=country,
    )


def metadata_value(metadata, name):
    """The value of `name` in a gRPC metadata sequence, or None."""
    for key, value in metadata or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


def check_invalid_amount(grpc, pb, stub, auth, args):
    """Quotes "10.001": returns the `remit-field` trailer of the
    INVALID_ARGUMENT it must fail with, or None when it did not."""
    request = pb.CreateQuoteRequest(
        source_country=args.source_country,
        source_currency=args.source_currency,
        destination_country=args.destination_country,
        destination_currency=args.destination_currency,
        send_amount=pb.Amount(value="10.001", currency=args.source_currency),
    )
    try:
        stub.CreateQuote(request, metadata=auth, timeout=30)
    except grpc.RpcError as error:
        field = metadata_value(error.trailing_metadata(), "remit-field")
        log(f"quote 10.001: {error.code().name} {error.details()!r} (remit-field {field!r})")
        return field if error.code() == grpc.StatusCode.INVALID_ARGUMENT else None
    log("quote 10.001: accepted, expected INVALID_ARGUMENT")
    return None


def run(args, grpc, pb, pb_grpc, result):
    """The whole flow; fills `result` and returns the exit status."""
    auth = (("authorization", f"Bearer {args.key}"),)
    with grpc.insecure_channel(args.url) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = pb_grpc.RemittancesStub(channel)
        result["invalid_amount_field"] = check_invalid_amount(grpc, pb, stub, auth, args)

        quote = stub.CreateQuote(
            pb.CreateQuoteRequest(
                source_country=args.source_country,
                source_currency=args.source_currency,
                destination_country=args.destination_country,
                destination_currency=args.destination_currency,
                send_amount=pb.Amount(value=args.amount, currency=args.source_currency),
            ),
            metadata=auth,
            timeout=30,
        )
        result["quote_send_amount"] = quote.send_amount.value
        result["quote_receive_amount"] = quote.receive_amount.value
        log(
            f"quote {quote.quote_id}: send {quote.send_amount.value} {quote.send_amount.currency}, "
            f"receive {quote.receive_amount.value} {quote.receive_amount.currency}"
        )

        created = stub.CreateRemittance(
            pb.CreateRemittanceRequest(
                quote_id=quote.quote_id,
                originator=person(pb, "Santos", "Maria", "9876543210", args.source_country),
                beneficiary=person(pb, "Reyes", "Jose", args.account, args.destination_country),
                purpose="FAMI",
                idempotency_key=str(uuid.uuid4()),
                remittance_information="remit_client.py",
            ),
            metadata=auth,
            timeout=30,
        )
        log(f"created {created.uetr}: {created.status}")
        last = created
        if created.status not in TERMINAL:
            # The stream sends the current state first, then every change
            # until a terminal one; its deadline bounds the whole wait.
            stream = stub.WatchRemittance(
                pb.WatchRemittanceRequest(uetr=created.uetr), metadata=auth, timeout=args.timeout
            )
            try:
                for update in stream:
                    log(f"{update.uetr}: {update.status}")
                    last = update
                    if update.status in TERMINAL:
                        stream.cancel()
                        break
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
                log(f"no terminal status within {args.timeout} s")

        result.update(
            uetr=last.uetr,
            status=last.status,
            send_amount=last.send_amount.value,
            send_currency=last.send_amount.currency,
            receive_amount=last.receive_amount.value,
            receive_currency=last.receive_amount.currency,
            fees_total=last.fees.total.value,
            rate=last.customer_rate,
        )
        if last.reason_code or last.reason:
            result["reason"] = f"{last.reason_code} {last.reason}".strip()
    return 0 if result["status"] == "completed" else 1


def main(argv):
    args = parse_args(argv)
    sys.path.insert(0, args.stubs)
    import grpc
    from remit.v1 import remittances_pb2 as pb
    from remit.v1 import remittances_pb2_grpc as pb_grpc

    result = {
        "uetr": None,
        "status": None,
        "send_amount": None,
        "send_currency": None,
        "receive_amount": None,
        "receive_currency": None,
        "fees_total": None,
        "rate": None,
        "quote_send_amount": None,
        "quote_receive_amount": None,
        "invalid_amount_field": None,
    }
    started = time.monotonic()
    try:
        code = run(args, grpc, pb, pb_grpc, result)
    except grpc.RpcError as error:
        result["error"] = f"{error.code().name}: {error.details()}"
        code = 1
    except grpc.FutureTimeoutError:
        result["error"] = f"cannot connect to {args.url}"
        code = 1
    result["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
