#!/usr/bin/env python3
"""Render a terminal capture (with colours) to a PNG, for the README.

    tmux capture-pane -e -p -t SESSION > capture.txt
    python3 scripts/terminal_png.py capture.txt docs/img/terminal.png

Understands the SGR escapes tmux emits (bold, 8/16/256 colours, truecolour,
reset); every other escape is dropped. Needs Pillow and DejaVu Sans Mono
(Debian: fonts-dejavu-core).
"""

import re
import sys

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
SIZE = 15
BG = (30, 32, 38)
FG = (215, 218, 224)
# A dark-theme palette for the 16 basic colours.
BASIC = [
    (40, 42, 54), (230, 90, 90), (120, 200, 110), (230, 200, 100),
    (100, 150, 240), (200, 120, 220), (90, 200, 210), (215, 218, 224),
    (110, 115, 125), (255, 120, 120), (150, 230, 140), (250, 225, 130),
    (140, 180, 255), (225, 150, 245), (130, 230, 240), (255, 255, 255),
]
SGR = re.compile(r"\x1b\[([0-9;]*)m")
OTHER_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def color256(n):
    if n < 16:
        return BASIC[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return (steps[n // 36], steps[(n // 6) % 6], steps[n % 6])
    g = 8 + 10 * (n - 232)
    return (g, g, g)


def apply(codes, state):
    nums = [int(c) if c else 0 for c in codes.split(";")] if codes else [0]
    i = 0
    while i < len(nums):
        c = nums[i]
        if c == 0:
            state.update(fg=FG, bold=False)
        elif c == 1:
            state["bold"] = True
        elif c == 22:
            state["bold"] = False
        elif 30 <= c <= 37:
            state["fg"] = BASIC[c - 30 + (8 if state["bold"] else 0)]
        elif 90 <= c <= 97:
            state["fg"] = BASIC[c - 90 + 8]
        elif c == 39:
            state["fg"] = FG
        elif c == 38 and i + 2 < len(nums) and nums[i + 1] == 5:
            state["fg"] = color256(nums[i + 2])
            i += 2
        elif c == 38 and i + 4 < len(nums) and nums[i + 1] == 2:
            state["fg"] = tuple(nums[i + 2:i + 5])
            i += 4
        i += 1


def main(src, dst):
    lines = open(src, encoding="utf-8").read().rstrip("\n").split("\n")
    while lines and not SGR.sub("", lines[-1]).strip():
        lines.pop()
    font = ImageFont.truetype(FONT, SIZE)
    bold = ImageFont.truetype(BOLD, SIZE)
    cw = font.getlength("M")
    lh = int(SIZE * 1.35)
    cols = max(len(SGR.sub("", OTHER_ESCAPE.sub("", l))) for l in lines)
    pad = 16
    img = Image.new("RGB", (int(cols * cw) + 2 * pad, len(lines) * lh + 2 * pad), BG)
    draw = ImageDraw.Draw(img)
    state = {"fg": FG, "bold": False}
    for row, line in enumerate(lines):
        line = OTHER_ESCAPE.sub(lambda m: m.group(0) if m.group(0).endswith("m") else "", line)
        col = 0
        pos = 0
        for m in SGR.finditer(line):
            text = line[pos:m.start()]
            draw.text((pad + col * cw, pad + row * lh), text, fill=state["fg"],
                      font=bold if state["bold"] else font)
            col += len(text)
            apply(m.group(1), state)
            pos = m.end()
        text = line[pos:]
        draw.text((pad + col * cw, pad + row * lh), text, fill=state["fg"],
                  font=bold if state["bold"] else font)
    img = img.quantize(colors=64).convert("P")
    img.save(dst, optimize=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
