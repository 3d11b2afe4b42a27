"""The paper's reported numbers (docs/method.md section 6; perplexities read off its bar charts)."""

PAPER_PPL = {
    "base": 13.02,
    "baseline": 12.17,
    "tbys-1": 12.10,
    "tbys-2": 12.02,
    "tbys-3": 11.98,
    "cyb-ap": 11.65,
    "cyb-va": 12.37,
    "cyb-dp": 11.67,
}
PAPER_HPARAMS = {
    "cyb-ap-o1111": "~12.4",
    "cyb-ap-o4114": "~12.4",
    "cyb-ap-g0.99": "11.70",
    "cyb-va-r4114": "poor (> baseline)",
    "cyb-va-r11333": "poor (> baseline)",
    "cyb-dp-a0.1": "not reported",
}
PAPER_LATENCY = (0.58, 0.15, 0.12, 0.14)  # share of answers after 0..3 pauses, best cyb-ap
PAPER_SPEARMAN = (0.383, 0.157, 0.271)  # calibration of d_i, steps 0..2
PAPER_MULTIPLE = {"baseline": "about 3x", "tbys-3": "about 2x (under 2/3 of the data beats it)"}
PAPER_TOKENS = {  # Table 3
    "few pauses, low variance": "isn wasn didn doesn don according able However etc Inc",
    "many pauses, low variance": (
        "devices players students projects challenges systems patients families teams"
    ),
    "context-dependent (high variance)": (
        "won to of New World S materials images photos site code page file"
    ),
}
