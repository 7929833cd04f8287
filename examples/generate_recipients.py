#!/usr/bin/env python3
"""Writes a synthetic affected-customer list (CSV) for demos and benchmarks. Deterministic: the same
count and seed give the same file. Every address is at example.com/.net/.org (reserved, never real).

usage: generate_recipients.py COUNT [SEED] > recipients.csv
With ALL_EMAIL=1 in the environment every row has an address and electronic consent (benchmarks).
"""
import csv
import os
import random
import sys

FIRST = ["Ada", "Grace", "Alan", "Maria", "José", "Lucía", "Wei", "Fatima", "Olu", "Sven", "Aroha", "Priya"]
LAST = ["Lovelace", "Hopper", "Turing", "García", "Núñez", "Chen", "Khan", "Adeyemi", "Larsen", "Patel"]
STATES = ["US-CA", "US-TX", "US-FL", "US-NY", "US-MA", "US-WA", "US-CO", "US-IL", "US-PA", "US-OH"]
DOMAINS = ["example.com", "example.net", "example.org", "mail.example.com"]


def main():
    count = int(sys.argv[1])
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(["customer_id", "email", "first_name", "last_name", "locale", "jurisdiction",
                  "electronic_consent", "address1", "city", "region", "postal_code", "country",
                  "enrollment_code", "data_exposed"])
    for i in range(1, count + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        state = rng.choice(STATES)
        # About 5% have no email and 10% no electronic consent: they need a letter.
        all_email = os.environ.get("ALL_EMAIL") == "1"
        email = "" if rng.random() < 0.05 and not all_email else f"customer{i:08d}@{rng.choice(DOMAINS)}"
        consent = "no" if rng.random() < 0.10 and not all_email else "yes"
        locale = "es-US" if rng.random() < 0.2 else "en-US"
        out.writerow([f"C{i:08d}", email, first, last, locale, state, consent,
                      f"{rng.randint(1, 9999)} Main Street", "Springfield", state[3:],
                      f"{rng.randint(10000, 99999)}", "US", f"EN-{rng.randrange(16**8):08X}",
                      "Name, address, loan number"])


if __name__ == "__main__":
    main()
