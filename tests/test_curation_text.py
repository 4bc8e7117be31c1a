"""The text logic of the curation steps on documents written here, in English and Chinese:
each rule fires on the junk it is for, and good medical text survives."""

from __future__ import annotations

import pytest

from meddata.curation import chinese, language, normalize, quality

pytest.importorskip("ftfy")


# ---- normalize --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def norm():
    return normalize.Normalizer()


def mojibake(text: str) -> str:
    """UTF-8 bytes read as Windows-1252, the commonest mojibake."""
    return text.encode("utf-8").decode("windows-1252", errors="replace")


@pytest.mark.parametrize("good", ["Café-au-lait spots suggest neurofibromatosis.",
                                  "高血压患者应低盐饮食，规律服用降压药。"])
def test_normalize_repairs_mojibake_in_both_languages(norm, good):
    broken = good.encode("utf-8").decode("latin-1")
    assert broken != good
    fixed, fixes = norm.fix(broken)
    assert fixed == good and "unicode" in fixes


def test_normalize_strips_html_and_decodes_entities(norm):
    text = "<p>Dose:&nbsp;5 mg/kg</p><br/><script>var x=1;</script><b>Max</b> &lt;40 mg/day"
    fixed, fixes = norm.fix(text)
    assert fixed == "Dose: 5 mg/kg\n\nMax <40 mg/day"
    assert fixes == ("html", "whitespace")
    fixed, _ = norm.fix("<table><tr><td>WBC</td><td>11.2</td></tr><tr><td>Hb</td><td>130</td>"
                        "</tr></table>")
    assert fixed == "WBC 11.2\nHb 130"
    zh, _ = norm.fix("<div>患者&ldquo;头痛&rdquo;三天</div>")
    assert zh == "患者“头痛”三天"


@pytest.mark.parametrize("text", ["K+ <3.5 mmol/L and Na+ >145 mmol/L", "<think>reason</think> B",
                                  "if a<b then", "血钾<3.5mmol/L", "AT&T; R&D"])
def test_normalize_leaves_comparisons_and_non_html_alone(norm, text):
    assert norm.fix(text) == (text, ())


def test_normalize_controls_whitespace_and_forms(norm):
    fixed, fixes = norm.fix("Take\x00 2\u200b tablets\t\tdaily  \r\n\n\n\nwith food ")
    assert fixed == "Take 2 tablets daily\n\nwith food"
    assert "controls" in fixes or "unicode" in fixes
    # NFC keeps Chinese full-width punctuation and full-width letters; NFKC folds them
    assert norm.fix("患者“头痛”，ＣＴ示：正常。") == ("患者“头痛”，ＣＴ示：正常。", ())
    nfkc = normalize.Normalizer(form="NFKC")
    assert nfkc.fix("ＣＴ示ｆｉｌｍ")[0] == "CT示film"
    assert norm.fix("Cafe\u0301")[0] == "Café" and norm.fix("Cafe\u0301")[1] == ("form",)
    with pytest.raises(ValueError, match="NFD"):
        normalize.Normalizer(form="NFD")


def test_normalize_keeps_good_medical_text(norm):
    for text in ["Metformin 500 mg PO BID; HbA1c 6.5%.", "Na⁺ 138 mmol/L, 5 µg, 10⁹/L",
                 "WBC 11.2\nRBC 4.5\nPLT 250", "患者服用Metformin 500mg bid，血糖控制良好。",
                 "Temperature 37.5°C (99.5°F); BP 120/80 mm Hg."]:
        assert norm.fix(text) == (text, ())


# ---- chinese ----------------------------------------------------------------------------------
def test_chinese_converts_phrases_only_in_chinese_text():
    t2s = chinese.Converter(chinese.config_for("simplified", None))
    assert t2s.convert("醫生說乾燥的頭髮需要護理") == "医生说干燥的头发需要护理"
    assert t2s.convert("口服阿莫西林（Amoxicillin）0.5g，每日三次") == "口服阿莫西林（Amoxicillin）0.5g，每日三次"
    assert t2s.convert("Hello 123") == "Hello 123"
    assert t2s.convert("漢方薬の処方") == "漢方薬の処方"    # Japanese: kanji stay
    s2t = chinese.Converter(chinese.config_for("traditional", None))
    assert s2t.convert("医生说干燥的头发") == "醫生說乾燥的頭髮"
    tw = chinese.Converter(chinese.config_for("simplified", "tw2sp"))
    assert tw.convert("軟體與滑鼠") == "软件与鼠标"


def test_chinese_bad_settings_name_the_choices():
    with pytest.raises(ValueError, match="t2s"):
        chinese.config_for("simplified", "t2x")
    with pytest.raises(ValueError, match="simplified"):
        chinese.config_for("hanzi", None)


# ---- language ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ident():
    pytest.importorskip("lingua")
    return language.Identifier()


def test_language_mixed_chinese_english_stays_chinese(ident):
    texts = ["口服阿莫西林 (Amoxicillin) 0.5g tid，CRP 12 mg/L，WBC 11.2×10^9/L。",
             "患者服用Metformin 500mg bid，血糖控制良好，HbA1c 6.5%。",
             "患者，男，45岁。ECG示ST段抬高，Troponin I 2.3 ng/mL，诊断STEMI，予PCI治疗。"]
    for v in ident.identify(texts):
        assert (v.lang, v.by_script) == ("zh", True)
        assert language.decide(v, ("en", "zh"), 0.8) == "keep"


def test_language_english_naming_a_herb_stays_english(ident):
    v, = ident.identify(["Huangqi (黄芪) is used in traditional Chinese medicine for fatigue "
                         "and weakness, often with other herbs, for several weeks."])
    assert v.lang == "en" and not v.by_script


def test_language_drops_other_languages_when_sure(ident):
    texts = ["Le patient présente une fièvre et des céphalées depuis trois jours.",
             "Der Patient klagt seit drei Tagen über Kopfschmerzen und Fieber.",
             "漢方薬の処方について教えてください。",
             "고혈압 환자의 식이요법에 대해 알려주세요."]
    got = [(v.lang, language.decide(v, ("en", "zh"), 0.8)) for v in ident.identify(texts)]
    assert got == [("fr", "drop"), ("de", "drop"), ("ja", "drop"), ("ko", "drop")]


def test_language_short_or_numeric_text_is_unsure_not_dropped(ident):
    verdicts = ident.identify(["K+ 3.2 mmol/L", "12345 678", "Hapten is?"])
    assert [language.decide(v, ("en", "zh"), 0.8) for v in verdicts][:2] == ["unsure", "unsure"]
    assert language.decide(verdicts[2], ("en", "zh"), 0.8) != "drop"
    assert language.decide(language.Verdict("fr", 1.0, False), (), 0.8) == "keep"


def test_language_unknown_code_is_named():
    pytest.importorskip("lingua")
    with pytest.raises(ValueError, match="'xx'"):
        language.lingua_language("xx")


# ---- quality ----------------------------------------------------------------------------------
T = quality.Thresholds()

CASE = ("A 54-year-old man presents with crushing chest pain radiating to the left arm for two "
        "hours. He has a history of hypertension and type 2 diabetes treated with metformin. "
        "His blood pressure is 150/95 mm Hg and pulse is 102/min. An ECG shows ST elevation in "
        "leads II, III and aVF. Which of the following is the most appropriate next step?")
ZH_CASE = ("患者，男，54岁，因胸骨后压榨样疼痛2小时入院，疼痛向左臂放射，伴大汗。既往有高血压病史10年，"
           "2型糖尿病5年，口服二甲双胍（Metformin）0.5g，每日三次。查体：血压150/95mmHg，心率102次/分。"
           "心电图示Ⅱ、Ⅲ、aVF导联ST段抬高。最可能的诊断是什么？应如何处理？")


def fires(parts, labels=""):
    hit = quality.check(parts, labels, T)
    return hit.rule if hit else None


@pytest.mark.parametrize("parts,labels", [
    (["Drug of choice for absence seizures?", "Ethosuximide."], ""),
    (["Vitamin K:"], "Clotting factor synthesis"),                       # MedMCQA-style stem
    (["Is aspirin indicated?", "yes"], ""),
    (["高血压的首选药物？", "ACEI类药物"], ""),
    (["Normal serum potassium?", "3.5-5.0 mmol/L"], ""),
    ([CASE, "Percutaneous coronary intervention within 90 minutes."], ""),
    ([ZH_CASE, "急性下壁心肌梗死，应尽快行急诊PCI。"], ""),
    (["Interpret the labs.", "WBC 11.2 ×10^9/L\nHb 98 g/L\nPLT 250 ×10^9/L\nCRP 56 mg/L\n"
      "ESR 40 mm/h\nK 3.2 mmol/L\nNa 138 mmol/L"], ""),                   # a table of numbers
    (["Dose?", "Amoxicillin 500 mg PO q8h x 7 d; max 3 g/day; CrCl <30: 500 mg q12h."], ""),
    (["血常规结果如何？", "白细胞 11.2×10^9/L\n血红蛋白 98 g/L\n血小板 250×10^9/L\nC反应蛋白 56 mg/L\n"
      "血沉 40 mm/h\n血钾 3.2 mmol/L"], ""),
    (["How to manage hypertension?", "- Reduce salt intake\n- Exercise regularly\n"
      "- Take ACE inhibitors as prescribed\n- Monitor blood pressure at home\n- Stop smoking"], ""),
    (["患者服用Metformin 500mg bid，血糖控制不佳，下一步？", "可加用SGLT2抑制剂如Dapagliflozin 10mg qd，"
      "并监测HbA1c和eGFR。"], ""),
])
def test_quality_keeps_good_medical_text(parts, labels):
    assert fires(parts, labels) is None


JUNK = {
    "too_short": (["ok"], ["嗯"]),
    "lorem_ipsum": ([CASE + " Lorem ipsum dolor sit amet."], [ZH_CASE + "lorem ipsum"]),
    "symbol_ratio": (["Best >>> deals @@@ ### $$$ %%% ^^^ &&& *** !!! ~~~ +++ === <<< here |||"],
                     ["点击【】【】《》《》！！！？？？……——、、、；；；：：：“”“”查看"]),
    "digit_ratio": (["4829 1038 5521 9930 1102 3948 5571 0293 8841 2209 7733 1029"],
                    ["电话13800138000 13900139000 13700137000 13600136000"]),
    "hash_ellipsis_ratio": (["Great tips for healthy living " + " ".join(
        f"#health{i} #fitness{i} #doctor{i}" for i in range(20))],
        ["健康小贴士" + "".join(f"#养生{i} #中医{i}……" for i in range(20))]),
    "mean_word_length": ([" ".join(["a b c d e f g h i j"] * 6)], None),
    "bullet_lines": (["\n".join(f"• item {i} of the list" for i in range(12))], None),
    "ellipsis_lines": (["\n".join(f"Read more about topic {i} ..." for i in range(8))],
                       ["\n".join(f"点击阅读第{i}篇文章全文……" for i in range(8))]),
    "dup_lines": (["Buy cheap pills now\nBuy cheap pills now\nBuy cheap pills now\nContact us"],
                  ["特价药品大促销\n特价药品大促销\n特价药品大促销\n联系我们"]),
    "dup_line_chars": (["\n".join([CASE, "Fever.", "Cough.", "Rash.", "Chills.", "Pain.", CASE])],
                       ["\n".join([ZH_CASE, "发热。", "咳嗽。", "皮疹。", "寒战。", "疼痛。", ZH_CASE])]),
    "dup_paragraphs": (["Call now.\n\nFree visit.\n\nCall now.\n\nFree visit.\n\nBook today."],
                       ["立即致电。\n\n免费就诊。\n\n立即致电。\n\n免费就诊。\n\n今天预约。"]),
    "dup_paragraph_chars": (["\n\n".join([CASE, "Fever.", "Cough.", "Rash.", "Pain.", CASE])],
                            ["\n\n".join([ZH_CASE, "发热。", "咳嗽。", "皮疹。", "疼痛。", ZH_CASE])]),
    "top_ngram": ([" ".join(["the best doctor"] * 40) + " " + CASE],
                  ["最好的医院" * 60 + ZH_CASE]),
    "dup_ngram": ([CASE + " " + " ".join(f"call now for a free consultation number {i}"
                                         for i in range(15))], None),
    "punct_lines": (["Home\nAbout us\nDepartments\nOur doctors\nContact\nLogin\nRegister\n"
                     "Careers"], ["首页\n关于我们\n科室介绍\n专家团队\n联系我们\n登录"]),
    "boilerplate_lines": (["Hypertension is common.\nAll rights reserved.\nPrivacy policy.\n"
                           "Terms of use.\nSubscribe to our newsletter today.\nShare."],
                          ["高血压很常见。\n版权所有。\n免责声明：仅供参考。\n转载请注明出处。\n关注我们。\n谢谢。"]),
}


@pytest.mark.parametrize("rule", sorted(JUNK))
def test_quality_each_rule_fires_on_its_junk(rule):
    en, zh = JUNK[rule]
    assert fires(en) == rule
    if zh is not None:
        assert fires(zh) == rule


def test_quality_rules_and_values():
    assert set(JUNK) <= set(quality.RULES)
    assert quality.check(["ok"], "", T) == ("too_short", 1.0, 3, None)
    off = quality.Thresholds(min_words=None)
    assert quality.check(["ok"], "", off) is None
    rule, value, limit, _ = quality.check(["\n".join(["same line here"] * 6)], "", T)
    assert limit == 0.3
    assert rule == "dup_lines" and value == pytest.approx(5 / 6, abs=1e-3)


def test_quality_dialogue_turns_replace_question_and_response():
    turns = ["我最近头痛。", "头痛多久了？", "三天了，伴有发热。", "建议测体温并查血常规。"]
    assert quality.prose("我最近头痛。", None, None, "建议测体温并查血常规。", turns) == turns
    assert quality.check(quality.prose("我最近头痛。", None, None, "建议测体温并查血常规。", turns),
                         "", T) is None
