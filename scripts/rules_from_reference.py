#!/usr/bin/env python3
"""Builds rules/jurisdictions.toml (the rules shipped inside the binary) from the researched reference
table (jurisdictions.toml and jurisdictions.md of the shared reference), so that the shipped file can be
rebuilt when the research is updated, and every choice made in the conversion is written down here.

Usage: scripts/rules_from_reference.py REFERENCE_DIR > rules/jurisdictions.toml

What the conversion does (docs/rules.md describes the resulting format):
- one regulator line of the reference ("A AND B", "A, B, C and D") becomes one [[jurisdiction.regulator]]
  per authority, each with the row's threshold and deadline;
- the reference's clock anchors become `timing` (before / with / after the consumer notice, or
  after_start: counted from discovery or determination) and `starts`;
- the reference's "facts I could not verify" (jurisdictions.md section 6) become each jurisdiction's
  `unverified` list, or the file's top-level `unverified` list when they concern no single row;
- no number is added: every number comes from the reference's own keys or texts.
"""

import re
import sys
import tomllib
from pathlib import Path

VERIFIED_ON = "2026-12-01"  # the reference's generated_on: when every row was checked against its sources

INDIVIDUAL_STARTS = {
    "discovery_of_breach": "discovery",
    "discovery_or_notification_of_breach": "discovery",
    "awareness_of_breach": "discovery",
    "learns_of_acquisition": "discovery",
    "determination_of_breach": "determination",
    "determination_of_breach_or_receipt_of_third_party_notice": "determination",
    "confirmation_of_breach": "determination",
}

# Regulator clock anchors counted from the breach (not from the consumer notice).
START_ANCHORS = {
    "determination_of_breach": "determination",
    "discovery_of_breach": "discovery",
    "detection_of_breach": "discovery",
    "detection_of_incident": "discovery",
    "identification_of_incident": "discovery",
    "awareness_of_breach": "discovery",
    "determination_of_cybersecurity_incident": "determination",
    "materiality_determination": "determination",
}

# Rows whose regulator line names several authorities, split by hand (same threshold and clock each).
SPLIT = {
    "US-AZ": ["Arizona Attorney General", "Director of the Arizona Department of Homeland Security"],
    "US-MA": [
        "Massachusetts Attorney General",
        "Director of the Office of Consumer Affairs and Business Regulation (OCABR)",
    ],
    "US-UT": ["Utah Attorney General", "Utah Cyber Center"],
    # The Info-Sec Supplement's 36-hour clock covers any cybersecurity incident; the Privacy Office's
    # 72-hour clock (10 or more borrowers) is added as a second regulator below.
    "US-GSE-FNMA": ["Fannie Mae (information security incident reporting)"],
    "US-WV": ["West Virginia Attorney General"],
    "US-NY": [
        "New York Attorney General",
        "New York Department of State",
        "New York Division of State Police",
        "New York Department of Financial Services (DFS)",
    ],
}

CONDITIONS = {
    ("US-NY", 3): "only if the entity is a 23 NYCRR 500 covered entity (see US-NY-DFS for its 72-hour clock)",
    ("US-AK", 0): "only when the entity determines there is no reasonable likelihood of harm and therefore does not notify residents",
    ("US-FED-SEC-8K", 0): "only for a material cybersecurity incident of an SEC registrant",
    ("US-WV", 0): "unresolved: the statute and DWT say no regulator notice; the WV AG page asks for one",
}

# Email as notice: how the condition text reads (docs/rules.md defines each value).
EMAIL = {
    "yes": "US-AL US-AZ US-FL US-IN US-NH US-VA US-WY AU CA",
    "conditional": "US-OH US-PA US-WI",
    "unverified": "US-OK",
    "not_prescribed": "EU-GDPR GB",
    "not_applicable": "US-FED-FTC-SAFEGUARDS US-NY-DFS US-FED-SEC-8K US-GSE-FNMA US-GSE-FHLMC US-GNMA",
}

# Rows that are not about individuals at all: their content list is what the regulator's notice asks.
NO_INDIVIDUAL_NOTICE = {
    "US-FED-FTC-SAFEGUARDS",
    "US-NY-DFS",
    "US-FED-SEC-8K",
    "US-GSE-FNMA",
    "US-GSE-FHLMC",
    "US-GNMA",
}
SECTOR = NO_INDIVIDUAL_NOTICE | {"US-FED-HIPAA"}

# What a regulator's notice or form asks, transcribed from the reference's texts (field named).
FORM_FIELDS = {
    "US-OK": ["date of breach", "date of determination", "nature", "PI types", "number of OK residents",
              "estimated monetary impact", "reasonable safeguards employed"],  # content_summary
    "US-TX": ["number of affected Texans", "number notified by mail or other direct method"],  # content_summary (HB 3746)
    "US-MT": ["electronic copy of the notice (no PII)", "date and method of distribution",
              "number of MT residents notified"],  # regulator_deadline_text
    "US-UT": ["date of breach", "date discovered", "total number affected incl. UT residents", "PI types",
              "short description"],  # regulator_deadline_text (eff. 2024-05-01)
    "US-SC": ["dates", "method", "number of SC consumers", "copy of notice", "actions taken"],  # regulator_deadline_text
    "US-NM": ["number of NM residents notified", "copy of notice"],  # regulator_deadline_text
    "US-NC": ["nature of breach", "number affected", "steps taken", "notice plan", "copy of notice"],  # regulator_deadline_text
    "US-NH": ["anticipated date of consumer notice", "approximate number of NH residents"],  # regulator_deadline_text
    "US-IL": ["nature of breach", "number of IL residents affected", "steps taken/planned"],  # other_obligations
    "US-MA": ["nature", "number of MA residents", "name/address", "reporter", "type of entity",
              "person responsible", "PI types", "whether WISP maintained", "steps taken"],  # other_obligations (i)-(ix)
    "US-VA": ["cover letter", "approx. date & discovery", "cause", "number of VA residents", "remediation",
              "FEIN if employee tax data", "sample notice"],  # fi/other notes: AG requests
    "US-NY": ["timing", "content", "distribution", "approx. number", "template copy"],  # regulator_deadline_text
    "US-RI": ["timing", "content", "distribution", "approx. number"],  # regulator_deadline_text
    "US-VT": ["number of VT residents", "copy of notice"],  # regulator_deadline_text (after the preliminary notice)
}

# jurisdictions.md section 6 ("Facts I could not verify"), bullet index -> the rows it concerns.
UNVERIFIED = {
    0: ["US-FED-HIPAA"], 1: ["US-NY-DFS"], 2: [], 3: ["US-GA"], 4: ["US-WY"], 5: ["US-NV"], 6: ["US-VT"],
    7: ["US-SD"], 8: ["US-WA"], 9: ["US-WV"], 10: ["US-AK"], 11: ["US-AR", "US-NM"], 12: ["US-VA", "US-OR"],
    13: ["US-MD"], 14: ["US-ND", "US-OK"], 15: ["US-OK"], 16: ["US-PA"], 17: ["US-CO"],
    18: ["US-HI", "US-UT", "US-OR", "US-SD", "US-NH", "US-ME", "US-IL", "US-NE", "US-NJ", "US-DE", "US-CT", "US-NC"],
    19: ["US-ME", "US-NH", "US-VT", "US-NC", "US-AR"], 20: ["US-DC"], 21: ["US-NY"], 22: ["US-TX"],
    23: ["US-FED-HIPAA"], 24: ["CA"], 25: ["EU-GDPR"], 26: ["AU"],
}
FILE_WIDE_UNVERIFIED = [2, 23, 24, 25]


# The sources the content rules of an entry come from (cited when a notice fails them), by code.
CONTENT_SOURCES = {
    "US-CA": ["CA_STAT", "CA_LEX2015"],
    "US-MA": ["MA_STAT"],
    "US-IL": ["IL_STAT"],
}

# How breach-notifier detects each `forbidden` item of the research (docs/content-checks.md): template
# variables that could carry it, phrases that say it, and nouns a number must not come before. These
# are this project's tests, not the research's words: conservative (they refuse what could say the
# forbidden thing), English with the Spanish of the example notices, and no substitute for counsel.
NATURE_PHRASES = [
    "what happened", "how it happened", "how the breach occurred", "unauthorized access",
    "unauthorised access", "unauthorized acquisition", "unauthorized use", "unauthorized party",
    "unauthorized third party", "ransomware", "malware", "phishing", "hacker", "hackers", "hacked",
    "hacking", "cyberattack", "cyber attack", "threat actor", "attacker", "attackers", "intrusion",
    "intruder", "stolen", "exfiltrated", "exfiltration", "misdirected", "misconfigured",
    "misconfiguration", "lost laptop", "qué sucedió", "acceso no autorizado",
    "adquisición no autorizada", "pirata informático", "piratas informáticos", "ciberataque",
]
NATURE_VARIABLES = [
    "nature", "breach_nature", "nature_of_breach", "what_happened", "how_it_happened",
    "incident_description", "breach_description", "breach_details", "incident_details",
]
COUNT_VARIABLES = [
    "affected_count", "number_affected", "residents_affected", "affected_residents", "total_affected",
    "affected_total", "individuals_affected", "affected_individuals", "count_affected",
]
COUNT_PHRASES = [
    "number of affected", "number of residents", "number of individuals", "number of persons",
    "number of people", "number of customers", "number of consumers", "number of borrowers",
    "residents affected", "individuals affected", "persons affected", "people affected",
    "customers affected", "consumers affected", "borrowers affected", "número de afectados",
    "personas afectadas", "residentes afectados", "clientes afectados",
]
COUNTED_NOUNS = [
    "residents", "individuals", "persons", "people", "customers", "consumers", "borrowers", "accounts",
    "records", "clients", "members", "patients", "employees", "users", "households", "residentes",
    "personas", "clientes", "cuentas", "registros",
]
CONTENT_CHECKS = {
    "US-MA": [
        {"rule": "nature of the breach of security or unauthorized acquisition or use",
         "variables": NATURE_VARIABLES, "phrases": NATURE_PHRASES},
        {"rule": "number of Massachusetts residents affected", "variables": COUNT_VARIABLES,
         "phrases": COUNT_PHRASES + ["massachusetts residents"], "counted_nouns": COUNTED_NOUNS},
    ],
    "US-IL": [
        {"rule": "number of Illinois residents affected by the breach", "variables": COUNT_VARIABLES,
         "phrases": COUNT_PHRASES + ["illinois residents"], "counted_nouns": COUNTED_NOUNS},
    ],
}


def content_checks(code, forbidden):
    """The `sources` line and the [[jurisdiction.content.forbidden_check]] tables of an entry."""
    out = []
    if code in CONTENT_SOURCES:
        out.append(f"sources = {qlist(CONTENT_SOURCES[code])}")
    for check in CONTENT_CHECKS.get(code, []):
        assert check["rule"] in forbidden, f"{code}: {check['rule']!r} is not a forbidden item"
        out += ["", "[[jurisdiction.content.forbidden_check]]", f"rule = {q(check['rule'])}"]
        for key in ("variables", "phrases", "counted_nouns"):
            if check.get(key):
                out.append(f"{key} = {qlist(check[key])}")
    return out


def q(s):
    """A TOML basic string."""
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{s}"'


def qlist(items):
    if not items:
        return "[]"
    return "[\n" + "".join(f"  {q(i)},\n" for i in items) + "]"


def unverified_bullets(md):
    section = md.split("## 6.")[1].split("## 7.")[0]
    return [line[2:].strip() for line in section.splitlines() if line.startswith("- ")]


def split_source(citation):
    """`title — URL (date)` into the citation and its date (the last parenthesised group)."""
    m = re.match(r"^(.*\S)\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)\s*$", citation)
    if m:
        return m.group(1), m.group(2)
    return citation, "undated"


def email_counts(code):
    for value, codes in EMAIL.items():
        if code in codes.split():
            return value
    return "with_consent"


def regulator_clock(j):
    """(timing, amount key, amount, starts, limit) from the reference's regulator keys."""
    code = j["code"]
    anchor = j.get("regulator_deadline_anchor")
    amount = None
    for key, ref in (("hours", "regulator_deadline_hours"), ("business_days", "regulator_deadline_business_days"),
                     ("days", "regulator_deadline_days")):
        if ref in j:
            amount = (key, j[ref])
            break  # hours and business days are authoritative over days (the reference's convention)
    if code == "US-FED-HIPAA":
        return "with", None, None, {"days": 60, "starts": "discovery"}
    if anchor == "earlier_of_consumer_notice_or_45_days_after_determination":
        return "with", None, None, {"days": 45, "starts": "determination"}
    if anchor == "earlier_of_14_business_days_after_discovery_or_consumer_notice":
        return "after", ("business_days", 14), None, {"business_days": 14, "starts": "discovery"}
    if anchor == "after_consumer_notice":
        return "after", amount, None, None
    if anchor == "before_consumer_notice":
        return "before", None, None, None
    if anchor in ("concurrent_with_consumer_notice", "no_later_than_consumer_notice"):
        return "with", None, None, None
    if anchor in START_ANCHORS and amount:
        return "after_start", amount, START_ANCHORS[anchor], None
    return "unspecified", None, None, None


def regulators(j):
    code = j["code"]
    if "regulator_threshold" not in j and code not in ("US-AK", "US-WV", "US-FED-SEC-8K"):
        return []
    names = SPLIT.get(code, [j["regulator"]])
    timing, amount, starts, limit = regulator_clock(j)
    out = []
    for i, name in enumerate(names):
        lines = ["[[jurisdiction.regulator]]", f"name = {q(name)}"]
        threshold = j.get("regulator_threshold")
        if code == "US-WV":
            lines.append('threshold = "unverified"')
        elif code == "US-GSE-FNMA":
            lines.append("threshold = 1  # 'Info-Sec Supplement: any cybersecurity incident'")
        else:
            lines.append(f"threshold = {threshold if threshold is not None else 1}")
        lines.append(f"threshold_text = {q(j['regulator_threshold_text'])}")
        if (code, i) in CONDITIONS:
            lines.append(f"condition = {q(CONDITIONS[(code, i)])}")
        lines.append(f'timing = "{timing}"')
        if amount:
            lines.append(f"{amount[0]} = {amount[1]}")
        if starts:
            lines.append(f'starts = "{starts}"')
        if limit:
            inner = ", ".join(f"{k} = {q(v) if isinstance(v, str) else v}" for k, v in limit.items())
            lines.append(f"limit = {{ {inner} }}")
        if j.get("regulator_deadline_anchor"):
            lines.append(f"anchor = {q(j['regulator_deadline_anchor'])}")
        lines.append(f"deadline_text = {q(j['regulator_deadline_text'])}")
        fields = FORM_FIELDS.get(code, [])
        if code in NO_INDIVIDUAL_NOTICE:
            fields = j["required_sections"]
        lines.append(f"form_fields = {qlist(fields)}")
        out.append("\n".join(lines))
    if code == "US-GSE-FNMA":
        out.append("\n".join([
            "[[jurisdiction.regulator]]",
            q("Fannie Mae Privacy Office").join(["name = ", ""]),
            "threshold = 10",
            q("10 or more borrowers, or any breach requiring notice to a regulator (Protecting Our Data page)").join(["threshold_text = ", ""]),
            'timing = "after_start"',
            f"hours = {j['privacy_office_deadline_hours']}",
            'starts = "discovery"',
            f"deadline_text = {q('Protecting Our Data page: Privacy Office within 72 hours (privacy_office_deadline_hours = 72 in the reference)')}",
            "form_fields = []",
        ]))
    return out


def jurisdiction(j, unverified):
    code = j["code"]
    out = ["[[jurisdiction]]", f"code = {q(code)}", f"name = {q(j['name'])}",
           f'applies_by = "{"sector" if code in SECTOR else "residence"}"',
           f'verified_on = "{VERIFIED_ON}"', f"sources_as_of = {q(j['verified_on_source_date'])}",
           f"confidence = {q(j['confidence'])}"]
    for key, ref in (("scope_note", "fi_note"), ("other_obligations", "other_obligations"), ("conflicts", "conflicts")):
        if ref in j:
            out.append(f"{key} = {q(j[ref])}")
    if not regulators(j):
        out.append(f"regulator_note = {q(j['regulator'] + ' — ' + j['regulator_threshold_text'])}")
    out.append(f"unverified = {qlist(unverified)}")
    out.append("")
    out.append("[jurisdiction.individual]")
    out.append(f"required = {'false' if code in NO_INDIVIDUAL_NOTICE else 'true'}")
    if "individual_deadline_days" in j:
        out.append(f"days = {j['individual_deadline_days']}")
        out.append(f'starts = "{INDIVIDUAL_STARTS[j["individual_deadline_anchor"]]}"')
        out.append(f"anchor = {q(j['individual_deadline_anchor'])}")
    out.append(f"text = {q(j['individual_deadline_text'])}")
    for r in regulators(j):
        out += ["", r]
    out += ["", "[jurisdiction.credit_bureaus]"]
    if "cra_threshold" in j:
        out.append(f"threshold = {j['cra_threshold']}")
    if "cra_deadline_hours" in j:
        out.append(f"hours = {j['cra_deadline_hours']}")
    out.append(f"text = {q(j['cra_threshold_text'])}")
    out += ["", "[jurisdiction.email]", f'counts = "{email_counts(code)}"',
            f"condition = {q(j['email_notice_condition'])}"]
    out += ["", "[jurisdiction.substitute]"]
    if "substitute_notice_cost_usd" in j:
        out.append(f"cost_usd = {j['substitute_notice_cost_usd']}")
    if "substitute_notice_persons" in j:
        out.append(f"persons = {j['substitute_notice_persons']}")
    out.append(f"text = {q(j['substitute_notice_text'])}")
    out += ["", "[jurisdiction.content]", f"summary = {q(j['content_summary'])}"]
    sections = [] if code in NO_INDIVIDUAL_NOTICE else j["required_sections"]
    if code == "US-CA":
        headings = [s.replace(" (title)", "") for s in sections]
        out.append(f"required_headings = {qlist(headings)}")
        out.append("required_elements = []")
    else:
        out.append("required_headings = []")
        out.append(f"required_elements = {qlist(sections)}")
    out.append(f"forbidden = {qlist(j['forbidden_content'])}")
    out += content_checks(code, j["forbidden_content"])
    for key, citation in zip(j["source_keys"], j["sources"]):
        text, date = split_source(citation)
        out += ["", "[[jurisdiction.source]]", f"key = {q(key)}", f"citation = {q(text)}", f"as_of = {q(date)}"]
    return "\n".join(out)


def main():
    ref = Path(sys.argv[1])
    data = tomllib.loads((ref / "jurisdictions.toml").read_text())
    bullets = unverified_bullets((ref / "jurisdictions.md").read_text())
    assert len(bullets) == len(UNVERIFIED), "section 6 of jurisdictions.md changed: update UNVERIFIED"
    per_code = {}
    for index, codes in UNVERIFIED.items():
        for code in codes:
            per_code.setdefault(code, []).append(bullets[index])
    print(HEADER.strip())
    print()
    print("schema_version = 1")
    print(f'generated_on = "{data["generated_on"]}"')
    print(f"unverified = {qlist([bullets[i] for i in FILE_WIDE_UNVERIFIED])}")
    print()
    print("[aliases]")
    for alias, target in data["aliases"].items():
        print(f"{q(alias)} = {q(target)}")
    for j in data["jurisdiction"]:
        print()
        print(jurisdiction(j, per_code.get(j["code"], [])))


HEADER = """
# Data-breach notification rules by jurisdiction, shipped inside breach-notifier (include_str!).
# NOT LEGAL ADVICE: a researched starting point for counsel, who can replace any entry with a file of
# their own (config key rules.file; docs/rules.md says how). `breach-notifier rules show` prints them.
#
# Built by scripts/rules_from_reference.py from the shared research table (jurisdictions.toml and
# jurisdictions.md, generated 2026-12-01); every number comes from a source listed with its entry.
# Format (docs/rules.md has the details):
#   individual: days + starts (discovery | determination) when the law sets a number; text always.
#   regulator: threshold = minimum affected residents ("more than 500" -> 501; any -> 1), or "unverified";
#     timing = before | with | after (the consumer notice) | after_start (discovery or determination,
#     named by starts) | unspecified (text only); days, hours or business_days for after/after_start;
#     limit = an outer clock from the breach, whichever comes first.
#   credit_bureaus / substitute: a threshold absent means no duty or figure was found.
#   unverified: facts the research could not verify (never turned into numbers here).
"""

if __name__ == "__main__":
    main()
