#!/usr/bin/env python3
"""Writes a large synthetic affected-customer list (CSV) fast, for the scale benchmark (bench/scale.sh).

usage: generate_scale.py COUNT [SEED] > recipients.csv

The columns, value lists and mix of examples/generate_recipients.py (about 5% without an email address,
so on the postal channel; 10% without electronic consent; 20% es-US, the rest en-US; accented names),
but over 55 jurisdictions instead of ten, faster: that script makes a dozen random calls and a csv.writer call
per row (1,000,000 rows: 18 s of CPU, 28 s on the loaded 2-core machine; 15,000,000 would take about
7 minutes), this one a third of that CPU, spread over every core (8-11 s per 1,000,000 rows there).
Here the random bits of a whole chunk come from one call, the name/locale/jurisdiction/consent
columns are looked up in a precomputed table of every combination, each row is one f-string, and the
chunks are made on every core (each chunk seeded from the seed and its number). Deterministic (the
same count and seed give the same file, on any number of cores), but not the same rows as the other
script.
Every address is at example.com/.net/.org (reserved, never real).
"""
import collections
import multiprocessing
import os
import random
import sys

FIRST = ["Ada", "Grace", "Alan", "Maria", "José", "Lucía", "Wei", "Fatima", "Olu", "Sven", "Aroha", "Priya"]
LAST = ["Lovelace", "Hopper", "Turing", "García", "Núñez", "Chen", "Khan", "Adeyemi", "Larsen", "Patel"]
# 55 jurisdictions, as a breach of a national lender spans: every state, DC and Puerto Rico, and three
# abroad (the UK, Australia, and Ireland through the rules' EU-* alias), so that deadlines of 30, 45
# and 60 days and the internal target interleave through the queue.
STATES = ["US-AL", "US-AK", "US-AZ", "US-AR", "US-CA", "US-CO", "US-CT", "US-DE", "US-DC", "US-FL",
          "US-GA", "US-HI", "US-ID", "US-IL", "US-IN", "US-IA", "US-KS", "US-KY", "US-LA", "US-ME",
          "US-MD", "US-MA", "US-MI", "US-MN", "US-MS", "US-MO", "US-MT", "US-NE", "US-NV", "US-NH",
          "US-NJ", "US-NM", "US-NY", "US-NC", "US-ND", "US-OH", "US-OK", "US-OR", "US-PA", "US-PR",
          "US-RI", "US-SC", "US-SD", "US-TN", "US-TX", "US-UT", "US-VT", "US-VA", "US-WA", "US-WV",
          "US-WI", "US-WY", "GB", "AU", "EU-IE"]
DOMAINS = ["example.com", "example.net", "example.org", "mail.example.com"]
HEADER = ("customer_id,email,first_name,last_name,locale,jurisdiction,electronic_consent,address1,city,"
          "region,postal_code,country,enrollment_code,data_exposed\n")
CHUNK = 100_000


def _combinations():
    """Every (first, last, locale, jurisdiction, consent): locale slot 0 of 5 is es-US (20%), consent
    slot 0 of 10 is "no" (10%); with each one's region."""
    names, regions = [], []
    for first in FIRST:
        for last in LAST:
            for loc in range(5):
                for state in STATES:
                    for cons in range(10):
                        names.append(f"{first},{last},{'es-US' if loc == 0 else 'en-US'},{state},"
                                     f"{'no' if cons == 0 else 'yes'}")
                        regions.append(state[3:])
    return names, regions


NAMES, REGIONS = _combinations()
# Slot 0 of 21 has no email address (4.8%): those customers go on the postal channel.
EMAIL_DOMAINS = [""] + [f"@{d}" for d in DOMAINS] * 5


def chunk(args):
    """Rows first..first+n-1, from their own generator."""
    seed, number, first, n = args
    rng = random.Random(seed * 1_000_003 + number)
    names, regions, domains, n_names = NAMES, REGIONS, EMAIL_DOMAINS, len(NAMES)
    # Three 32-bit words per row: the combination and email domain, the street number and postal
    # code, the enrollment code.
    words = memoryview(rng.randbytes(12 * n)).cast("I")
    rows = []
    append = rows.append
    for k in range(n):
        a, b, c = words[3 * k], words[3 * k + 1], words[3 * k + 2]
        j = a % n_names
        dom = domains[(a // n_names) % 21]
        cid = first + k
        append(f"C{cid:08d},{f'customer{cid:08d}{dom}' if dom else ''},{names[j]},"
               f"{b % 9999 + 1} Main Street,Springfield,{regions[j]},{(b // 9999) % 90000 + 10000},"
               f"US,EN-{c:08X},\"Name, address, loan number\"\n")
    return "".join(rows)


def main():
    count = int(sys.argv[1])
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    jobs = [(seed, number, first, min(CHUNK, count - first + 1))
            for number, first in enumerate(range(1, count + 1, CHUNK))]
    out = sys.stdout
    out.write(HEADER)
    workers = os.cpu_count() or 1
    with multiprocessing.Pool(workers) as pool:
        # In order, and at most two chunks per core waiting (a slow reader must not fill memory).
        pending = collections.deque()
        for job in jobs:
            pending.append(pool.apply_async(chunk, (job,)))
            if len(pending) >= 2 * workers:
                out.write(pending.popleft().get())
        while pending:
            out.write(pending.popleft().get())
    out.flush()


if __name__ == "__main__":
    main()
