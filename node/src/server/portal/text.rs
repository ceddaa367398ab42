//! What the self-service page says, in each language it speaks: English, Chinese in simplified
//! script (zh-CN) and in traditional script (zh-TW).
//!
//! One [`Text`] per language, checked by the compiler: a sentence added to one language and not
//! the others does not build. Sentences that carry a value (a date, a purpose) are functions,
//! so that each language puts the value where its grammar wants it. What the policy says about
//! a purpose is translated in the policy file ([`amble_policy::Purpose::description_in`]).

use amble_consent::{AssistanceLevel, ConsentEventKind, Method};
use amble_policy::Language;
use time::OffsetDateTime;

/// Everything the page says in one language.
pub(super) struct Text {
    pub(super) lang: Language,
    /// The language's own name, for the switch.
    pub(super) name: &'static str,
    pub(super) languages: &'static str,
    pub(super) privacy_contact: &'static str,

    pub(super) title_home: &'static str,
    pub(super) title_log: &'static str,
    pub(super) title_review: &'static str,
    pub(super) title_link_invalid: &'static str,
    pub(super) title_wait: &'static str,
    pub(super) title_error: &'static str,
    pub(super) title_confirm: &'static str,
    pub(super) title_erased: &'static str,
    pub(super) title_signed_out: &'static str,
    pub(super) title_bad_request: &'static str,
    pub(super) title_not_found: &'static str,
    pub(super) title_unknown_purpose: &'static str,

    pub(super) link_used: &'static str,
    pub(super) open_from_app: &'static str,
    pub(super) session_ended: &'static str,
    pub(super) not_from_page: &'static str,
    pub(super) new_link_hint: &'static str,
    pub(super) cannot_export: &'static str,
    pub(super) cannot_erase: &'static str,
    pub(super) cannot_log: &'static str,
    pub(super) cannot_review: &'static str,
    pub(super) cannot_change: &'static str,
    pub(super) too_fast: &'static str,
    pub(super) error_text: &'static str,
    pub(super) confirm_erase: &'static str,
    pub(super) erased: &'static str,
    pub(super) signed_out: &'static str,
    pub(super) back: &'static str,
    /// (date of the decision, its logged explanation)
    pub(super) review_asked: fn(&str, &str) -> String,

    pub(super) agreed_heading: &'static str,
    pub(super) your_consent: &'static str,
    pub(super) given: &'static str,
    pub(super) not_given: &'static str,
    /// (date, how): when and how a consent in force was given.
    pub(super) given_on: fn(&str, &str) -> String,
    pub(super) withdrawn_on: fn(&str) -> String,
    pub(super) expired_on: fn(&str) -> String,
    /// How a choice reached the organisation, by [`Method`] in `Method::ALL` order.
    pub(super) how: [&'static str; 5],
    pub(super) give: &'static str,
    pub(super) withdraw: &'static str,
    pub(super) ai_heading: &'static str,
    /// By [`AssistanceLevel`] in `AssistanceLevel::ALL` order.
    pub(super) levels: [&'static str; 3],
    pub(super) save_choice: &'static str,
    pub(super) limit_heading: &'static str,
    pub(super) you_object: &'static str,
    pub(super) withdraw_objection: &'static str,
    pub(super) object: &'static str,
    pub(super) restricted_since: fn(&str) -> String,
    pub(super) lift: &'static str,
    pub(super) restrict_explained: &'static str,
    pub(super) restrict: &'static str,
    pub(super) data_heading: &'static str,
    pub(super) download: &'static str,
    pub(super) erase_heading: &'static str,
    pub(super) erase_confirm: &'static str,
    pub(super) erase: &'static str,
    pub(super) verify_first: &'static str,
    pub(super) receipts_heading: &'static str,
    pub(super) receipts_intro: &'static str,
    pub(super) receipt_no: &'static str,
    pub(super) sign_out: &'static str,

    pub(super) consent_given: fn(&str) -> String,
    pub(super) consent_withdrawn: fn(&str) -> String,
    pub(super) consent_expired: fn(&str) -> String,
    pub(super) chose_level: fn(&str) -> String,
    pub(super) restricted: &'static str,
    pub(super) unrestricted: &'static str,
    pub(super) objected: fn(&str) -> String,
    pub(super) unobjected: fn(&str) -> String,

    pub(super) log_intro: &'static str,
    pub(super) refused: &'static str,
    pub(super) by: &'static str,
    pub(super) ask_review: &'static str,
    /// Kinds of reader: agent, app, the person on this page, admin, auditor, the node's
    /// training, the coordinator, the privacy officer, anyone else.
    pub(super) readers: [&'static str; 9],
    pub(super) read_for: fn(&str) -> String,
    pub(super) looked_up: fn(&str) -> String,
    pub(super) appended: &'static str,
    pub(super) choice_changed: fn(&str) -> String,
    pub(super) trained: fn(&str) -> String,
    pub(super) routed: &'static str,
    pub(super) review_requested: &'static str,
    pub(super) request_answered: &'static str,
    pub(super) rectified: &'static str,
    pub(super) exported: &'static str,
    pub(super) link_issued: &'static str,
    pub(super) identity_changed: &'static str,
    pub(super) other_action: fn(&str) -> String,

    /// A day, as people of this language write it.
    pub(super) date: fn(OffsetDateTime) -> String,
    /// A day and a time of day (UTC).
    pub(super) moment: fn(OffsetDateTime) -> String,
}

/// A choice the person recorded, as a receipt or an access-log entry tells it.
pub(super) enum Choice<'a> {
    Consent(ConsentEventKind, &'a str),
    Assistance(AssistanceLevel),
    Restriction(bool),
    Objection(&'a str, bool),
}

impl Text {
    /// The text for `lang`.
    pub(super) fn of(lang: Language) -> &'static Text {
        match lang {
            Language::ZhCn => &ZH_CN,
            Language::ZhTw => &ZH_TW,
            _ => &EN,
        }
    }

    /// How a choice reached the organisation.
    pub(super) fn how(&self, m: Method) -> &'static str {
        let i = Method::ALL.iter().position(|x| *x == m).unwrap_or(0);
        self.how.get(i).copied().unwrap_or("")
    }

    /// A level of AI assistance, in words.
    pub(super) fn level(&self, l: AssistanceLevel) -> &'static str {
        let i = AssistanceLevel::ALL
            .iter()
            .position(|x| *x == l)
            .unwrap_or(0);
        self.levels.get(i).copied().unwrap_or("")
    }

    /// The kind of reader a role is, as the person is told: never an id.
    pub(super) fn reader(&self, role: &str) -> &'static str {
        let i = match role {
            "agent" => 0,
            "app" => 1,
            "subject-portal" => 2,
            "admin" => 3,
            "auditor" => 4,
            "node" => 5,
            "coordinator" => 6,
            "privacy-officer" => 7,
            _ => 8,
        };
        self.readers[i]
    }

    /// A recorded choice in one sentence.
    pub(super) fn choice(&self, c: &Choice<'_>) -> String {
        match c {
            Choice::Consent(ConsentEventKind::Given, p) => (self.consent_given)(p),
            Choice::Consent(ConsentEventKind::Withdrawn, p) => (self.consent_withdrawn)(p),
            Choice::Consent(ConsentEventKind::Expired, p) => (self.consent_expired)(p),
            Choice::Assistance(l) => (self.chose_level)(self.level(*l)),
            Choice::Restriction(true) => self.restricted.to_owned(),
            Choice::Restriction(false) => self.unrestricted.to_owned(),
            Choice::Objection(p, true) => (self.objected)(p),
            Choice::Objection(p, false) => (self.unobjected)(p),
        }
    }
}

/// Picks the page's language from an `Accept-Language` header (RFC 9110 §12.5.4): the
/// highest-weighted range the page speaks, the first listed among equals. Any `zh` range
/// in traditional script or of Taiwan, Hong Kong or Macao reads zh-TW, any other `zh` zh-CN;
/// `*` and a header naming none of them read English.
pub(super) fn negotiate(header: &str) -> Language {
    let mut best: Option<(u16, Language)> = None;
    for range in header.split(',').take(32) {
        let mut parts = range.split(';');
        let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .map_or(Some(1000), quality);
        let (Some(q), Some(lang)) = (q, language_of(&tag)) else {
            continue;
        };
        if q > 0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, lang));
        }
    }
    best.map_or(Language::En, |(_, l)| l)
}

/// A `q` value in thousandths; `None` for anything RFC 9110 does not allow.
fn quality(q: &str) -> Option<u16> {
    let q = q.trim();
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn language_of(tag: &str) -> Option<Language> {
    let mut subtags = tag.split(['-', '_']);
    match subtags.next()? {
        "en" | "*" => Some(Language::En),
        "zh" => {
            let traditional = subtags.any(|s| matches!(s, "hant" | "tw" | "hk" | "mo"));
            Some(if traditional {
                Language::ZhTw
            } else {
                Language::ZhCn
            })
        }
        _ => None,
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn utc(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(time::UtcOffset::UTC)
}

fn en_date(t: OffsetDateTime) -> String {
    let t = utc(t);
    let month = MONTHS
        .get(usize::from(u8::from(t.month())).saturating_sub(1))
        .copied()
        .unwrap_or("");
    format!("{} {month} {}", t.day(), t.year())
}

fn zh_date(t: OffsetDateTime) -> String {
    let t = utc(t);
    format!("{}年{}月{}日", t.year(), u8::from(t.month()), t.day())
}

fn zh_moment(t: OffsetDateTime) -> String {
    let u = utc(t);
    format!("{} {:02}:{:02}（UTC）", zh_date(t), u.hour(), u.minute())
}

static EN: Text = Text {
    lang: Language::En,
    name: "English",
    languages: "Language",
    privacy_contact: "Questions about your data:",

    title_home: "Your data and your choices",
    title_log: "Who used or looked at your data",
    title_review: "A person will review this decision",
    title_link_invalid: "Link not valid",
    title_wait: "Please wait a moment",
    title_error: "Something went wrong",
    title_confirm: "Please confirm",
    title_erased: "Your data was erased",
    title_signed_out: "You are signed out",
    title_bad_request: "Bad request",
    title_not_found: "Not found",
    title_unknown_purpose: "Unknown purpose",

    link_used: "This link has expired or was already used.",
    open_from_app: "Please open the link from the app.",
    session_ended: "Your session has ended.",
    not_from_page: "The form was not sent from this page.",
    new_link_hint: "Please ask for a new link in the app.",
    cannot_export: "This link cannot download your data; please verify your identity with the organisation.",
    cannot_erase: "This link cannot erase your data; please verify your identity with the organisation.",
    cannot_log: "This link cannot show your access log; please verify your identity with the organisation.",
    cannot_review: "This link cannot ask for a review; please verify your identity with the organisation.",
    cannot_change: "This link cannot change that; please verify your identity with the organisation.",
    too_fast: "This page had more requests than a person makes; please wait a second and reload.",
    error_text: "Your request could not be completed. Nothing was changed unless the page said so. Please try again later.",
    confirm_erase: "Tick the box to confirm that you want your data erased.",
    erased: "We have erased everything we held about you.",
    signed_out: "This page is closed. Ask the app for a new link to come back.",
    back: "Back",
    review_asked: |date, why| {
        format!(
            "We have asked a person to review the decision of {date}. What was recorded when it \
             was made: {why}."
        )
    },

    agreed_heading: "What you have agreed to",
    your_consent: "Your consent:",
    given: "given",
    not_given: "not given",
    given_on: |date, how| format!("Given on {date}, {how}."),
    withdrawn_on: |date| format!("Withdrawn on {date}."),
    expired_on: |date| format!("Expired on {date}."),
    how: [
        "in the app",
        "on this page",
        "through a service agent",
        "through another of our systems",
        "through an administrator",
    ],
    give: "Give my consent",
    withdraw: "Withdraw my consent",
    ai_heading: "How much AI serves you",
    levels: [
        "Only people answer your requests",
        "AI may draft answers to your requests; a person checks each one before it is sent",
        "AI may answer routine requests directly; sensitive ones still go to a person",
    ],
    save_choice: "Save my choice",
    limit_heading: "Limit what we do with your data",
    you_object: "You object to this.",
    withdraw_objection: "Withdraw my objection",
    object: "I object to this",
    restricted_since: |date| {
        format!(
            "Since {date} we keep your data but use it for nothing except what the law requires."
        )
    },
    lift: "Lift the restriction",
    restrict_explained: "You can ask us to keep your data but use it for nothing except what the law requires, for example while you contest its accuracy.",
    restrict: "Restrict the use of my data",
    data_heading: "Your data",
    download: "Download everything we hold about you (JSON)",
    erase_heading: "Erase your data",
    erase_confirm: "I understand that this erases everything we hold about me and cannot be undone.",
    erase: "Erase my data",
    verify_first: "To download or erase your data, please ask for a link through the organisation's identity check: the link you opened came from an app, which may show your choices but not hand out or erase your data.",
    receipts_heading: "Your receipts",
    receipts_intro: "Every choice you made, newest first. The organisation signed a receipt for each; quote its number if you contact us.",
    receipt_no: "Receipt",
    sign_out: "Sign out",

    consent_given: |p| format!("You gave your consent: {p}"),
    consent_withdrawn: |p| format!("You withdrew your consent: {p}"),
    consent_expired: |p| format!("Your consent expired: {p}"),
    chose_level: |l| format!("You chose: {l}"),
    restricted: "You restricted the use of your data",
    unrestricted: "You lifted the restriction on your data",
    objected: |p| format!("You objected: {p}"),
    unobjected: |p| format!("You withdrew your objection: {p}"),

    log_intro: "Every time your data was used or looked at, newest first. Staff are shown by their kind, never by name.",
    refused: "(refused)",
    by: "by",
    ask_review: "Ask a person to review this decision",
    readers: [
        "a service agent",
        "the organisation's app",
        "you, on this page",
        "an administrator",
        "an auditor",
        "the organisation's own training",
        "the federation's coordinator",
        "the privacy officer",
        "the organisation",
    ],
    read_for: |p| format!("your data was read: {p}"),
    looked_up: |what| format!("your records were looked up ({what})"),
    appended: "new records were added to your file",
    choice_changed: |p| format!("your choice changed: {p}"),
    trained: |p| format!("your data was used to train a model: {p}"),
    routed: "your request was routed automatically",
    review_requested: "you asked a person to review a decision",
    request_answered: "your request was answered",
    rectified: "a record was corrected at your request",
    exported: "a copy of your data was exported for you",
    link_issued: "a link to this page was issued",
    identity_changed: "the ways we recognise you were changed",
    other_action: |a| a.replace('_', " "),

    date: en_date,
    moment: |t| {
        let u = utc(t);
        format!("{}, {:02}:{:02} UTC", en_date(t), u.hour(), u.minute())
    },
};

static ZH_CN: Text = Text {
    lang: Language::ZhCn,
    name: "简体中文",
    languages: "语言",
    privacy_contact: "有关您数据的问题，请联系：",

    title_home: "您的数据与您的选择",
    title_log: "谁使用或查看了您的数据",
    title_review: "将由工作人员复核这项决定",
    title_link_invalid: "链接无效",
    title_wait: "请稍候",
    title_error: "出了点问题",
    title_confirm: "请确认",
    title_erased: "您的数据已删除",
    title_signed_out: "您已退出",
    title_bad_request: "请求无效",
    title_not_found: "页面不存在",
    title_unknown_purpose: "未知的用途",

    link_used: "此链接已过期或已被使用。",
    open_from_app: "请从应用中打开链接。",
    session_ended: "您的会话已结束。",
    not_from_page: "该表单不是从本页面提交的。",
    new_link_hint: "请在应用中申请新的链接。",
    cannot_export: "此链接不能下载您的数据；请先向本机构核实您的身份。",
    cannot_erase: "此链接不能删除您的数据；请先向本机构核实您的身份。",
    cannot_log: "此链接不能显示您的访问记录；请先向本机构核实您的身份。",
    cannot_review: "此链接不能申请复核；请先向本机构核实您的身份。",
    cannot_change: "此链接不能更改这项设置；请先向本机构核实您的身份。",
    too_fast: "本页面收到的请求超出了正常使用的频率；请稍等一秒后刷新。",
    error_text: "您的请求未能完成。除非页面另有说明，否则没有任何更改。请稍后再试。",
    confirm_erase: "请勾选方框，确认您要删除您的数据。",
    erased: "我们已删除持有的关于您的全部数据。",
    signed_out: "本页面已关闭。如需返回，请在应用中申请新的链接。",
    back: "返回",
    review_asked: |date, why| {
        format!("我们已请工作人员复核 {date} 的决定。作出决定时记录的说明：{why}。")
    },

    agreed_heading: "您同意了什么",
    your_consent: "您的同意：",
    given: "已同意",
    not_given: "未同意",
    given_on: |date, how| format!("您于 {date}{how}同意。"),
    withdrawn_on: |date| format!("已于 {date} 撤回。"),
    expired_on: |date| format!("已于 {date} 过期。"),
    how: [
        "在应用中",
        "在本页面",
        "通过客服人员",
        "通过我们的其他系统",
        "通过管理员",
    ],
    give: "我同意",
    withdraw: "撤回我的同意",
    ai_heading: "AI 为您服务的程度",
    levels: [
        "仅由人工处理您的请求",
        "AI 可以为您的请求起草回复，每条回复发送前都由工作人员审核",
        "AI 可以直接回复常规请求，敏感请求仍交由工作人员处理",
    ],
    save_choice: "保存我的选择",
    limit_heading: "限制我们对您数据的使用",
    you_object: "您已反对此项处理。",
    withdraw_objection: "撤回我的反对",
    object: "我反对",
    restricted_since: |date| {
        format!("自 {date} 起，我们保存您的数据，但除法律要求外不作任何使用。")
    },
    lift: "解除限制",
    restrict_explained: "您可以要求我们保存您的数据，但除法律要求外不作任何使用，例如在您对数据的准确性提出异议期间。",
    restrict: "限制使用我的数据",
    data_heading: "您的数据",
    download: "下载我们持有的关于您的全部数据（JSON）",
    erase_heading: "删除您的数据",
    erase_confirm: "我了解这会删除你们持有的关于我的全部数据，且无法撤销。",
    erase: "删除我的数据",
    verify_first: "如需下载或删除您的数据，请通过本机构的身份核验申请链接：您打开的链接来自应用，它可以显示您的选择，但不能提供或删除您的数据。",
    receipts_heading: "您的凭证",
    receipts_intro: "您作出的每一项选择，按时间由新到旧排列。本机构为每一项签署了凭证；联系我们时请提供凭证编号。",
    receipt_no: "凭证编号",
    sign_out: "退出",

    consent_given: |p| format!("您同意了：{p}"),
    consent_withdrawn: |p| format!("您撤回了同意：{p}"),
    consent_expired: |p| format!("您的同意已过期：{p}"),
    chose_level: |l| format!("您选择了：{l}"),
    restricted: "您限制了对您数据的使用",
    unrestricted: "您解除了对您数据的使用限制",
    objected: |p| format!("您反对：{p}"),
    unobjected: |p| format!("您撤回了反对：{p}"),

    log_intro: "您的数据每一次被使用或查看的记录，按时间由新到旧排列。工作人员只显示类别，从不显示姓名。",
    refused: "（已拒绝）",
    by: "操作方：",
    ask_review: "请工作人员复核这项决定",
    readers: [
        "客服人员",
        "本机构的应用",
        "您本人（在本页面）",
        "管理员",
        "审计员",
        "本机构自己的模型训练",
        "联邦协调方",
        "个人信息保护负责人",
        "本机构",
    ],
    read_for: |p| format!("您的数据被读取：{p}"),
    looked_up: |what| format!("查询了您的记录（{what}）"),
    appended: "您的档案中新增了记录",
    choice_changed: |p| format!("您的选择有变更：{p}"),
    trained: |p| format!("您的数据被用于训练模型：{p}"),
    routed: "您的请求被自动分派",
    review_requested: "您请工作人员复核了一项决定",
    request_answered: "您的请求已得到答复",
    rectified: "应您的要求更正了一条记录",
    exported: "为您导出了一份数据副本",
    link_issued: "签发了一个访问本页面的链接",
    identity_changed: "我们识别您的方式有变更",
    other_action: |a| format!("其他操作（{a}）"),

    date: zh_date,
    moment: zh_moment,
};

static ZH_TW: Text = Text {
    lang: Language::ZhTw,
    name: "繁體中文",
    languages: "語言",
    privacy_contact: "關於您資料的問題，請聯絡：",

    title_home: "您的資料與您的選擇",
    title_log: "誰使用或查看了您的資料",
    title_review: "將由工作人員複核這項決定",
    title_link_invalid: "連結無效",
    title_wait: "請稍候",
    title_error: "發生了問題",
    title_confirm: "請確認",
    title_erased: "您的資料已刪除",
    title_signed_out: "您已登出",
    title_bad_request: "請求無效",
    title_not_found: "找不到頁面",
    title_unknown_purpose: "未知的用途",

    link_used: "此連結已過期或已被使用。",
    open_from_app: "請從應用程式中開啟連結。",
    session_ended: "您的工作階段已結束。",
    not_from_page: "該表單不是從本頁面送出的。",
    new_link_hint: "請在應用程式中申請新的連結。",
    cannot_export: "此連結不能下載您的資料；請先向本機構核實您的身分。",
    cannot_erase: "此連結不能刪除您的資料；請先向本機構核實您的身分。",
    cannot_log: "此連結不能顯示您的存取紀錄；請先向本機構核實您的身分。",
    cannot_review: "此連結不能申請複核；請先向本機構核實您的身分。",
    cannot_change: "此連結不能變更這項設定；請先向本機構核實您的身分。",
    too_fast: "本頁面收到的請求超出了正常使用的頻率；請稍等一秒後重新整理。",
    error_text: "您的請求未能完成。除非頁面另有說明，否則沒有任何變更。請稍後再試。",
    confirm_erase: "請勾選方框，確認您要刪除您的資料。",
    erased: "我們已刪除持有的關於您的全部資料。",
    signed_out: "本頁面已關閉。如需返回，請在應用程式中申請新的連結。",
    back: "返回",
    review_asked: |date, why| {
        format!("我們已請工作人員複核 {date} 的決定。作出決定時記錄的說明：{why}。")
    },

    agreed_heading: "您同意了什麼",
    your_consent: "您的同意：",
    given: "已同意",
    not_given: "未同意",
    given_on: |date, how| format!("您於 {date}{how}同意。"),
    withdrawn_on: |date| format!("已於 {date} 撤回。"),
    expired_on: |date| format!("已於 {date} 過期。"),
    how: [
        "在應用程式中",
        "在本頁面",
        "透過客服人員",
        "透過我們的其他系統",
        "透過管理員",
    ],
    give: "我同意",
    withdraw: "撤回我的同意",
    ai_heading: "AI 為您服務的程度",
    levels: [
        "僅由人工處理您的請求",
        "AI 可以為您的請求草擬回覆，每則回覆送出前都由工作人員審核",
        "AI 可以直接回覆例行請求，敏感請求仍交由工作人員處理",
    ],
    save_choice: "儲存我的選擇",
    limit_heading: "限制我們對您資料的使用",
    you_object: "您已反對此項處理。",
    withdraw_objection: "撤回我的反對",
    object: "我反對",
    restricted_since: |date| {
        format!("自 {date} 起，我們保存您的資料，但除法律要求外不作任何使用。")
    },
    lift: "解除限制",
    restrict_explained: "您可以要求我們保存您的資料，但除法律要求外不作任何使用，例如在您對資料的正確性提出異議期間。",
    restrict: "限制使用我的資料",
    data_heading: "您的資料",
    download: "下載我們持有的關於您的全部資料（JSON）",
    erase_heading: "刪除您的資料",
    erase_confirm: "我了解這會刪除你們持有的關於我的全部資料，且無法復原。",
    erase: "刪除我的資料",
    verify_first: "如需下載或刪除您的資料，請透過本機構的身分核驗申請連結：您開啟的連結來自應用程式，它可以顯示您的選擇，但不能提供或刪除您的資料。",
    receipts_heading: "您的憑證",
    receipts_intro: "您作出的每一項選擇，依時間由新到舊排列。本機構為每一項簽署了憑證；聯絡我們時請提供憑證編號。",
    receipt_no: "憑證編號",
    sign_out: "登出",

    consent_given: |p| format!("您同意了：{p}"),
    consent_withdrawn: |p| format!("您撤回了同意：{p}"),
    consent_expired: |p| format!("您的同意已過期：{p}"),
    chose_level: |l| format!("您選擇了：{l}"),
    restricted: "您限制了對您資料的使用",
    unrestricted: "您解除了對您資料的使用限制",
    objected: |p| format!("您反對：{p}"),
    unobjected: |p| format!("您撤回了反對：{p}"),

    log_intro: "您的資料每一次被使用或查看的紀錄，依時間由新到舊排列。工作人員只顯示類別，從不顯示姓名。",
    refused: "（已拒絕）",
    by: "操作方：",
    ask_review: "請工作人員複核這項決定",
    readers: [
        "客服人員",
        "本機構的應用程式",
        "您本人（在本頁面）",
        "管理員",
        "稽核人員",
        "本機構自己的模型訓練",
        "聯邦協調方",
        "個人資料保護負責人",
        "本機構",
    ],
    read_for: |p| format!("您的資料被讀取：{p}"),
    looked_up: |what| format!("查詢了您的紀錄（{what}）"),
    appended: "您的檔案中新增了紀錄",
    choice_changed: |p| format!("您的選擇有變更：{p}"),
    trained: |p| format!("您的資料被用於訓練模型：{p}"),
    routed: "您的請求被自動分派",
    review_requested: "您請工作人員複核了一項決定",
    request_answered: "您的請求已獲得答覆",
    rectified: "應您的要求更正了一筆紀錄",
    exported: "為您匯出了一份資料副本",
    link_issued: "簽發了一個存取本頁面的連結",
    identity_changed: "我們識別您的方式有變更",
    other_action: |a| format!("其他操作（{a}）"),

    date: zh_date,
    moment: zh_moment,
};

/// Every language the page speaks, for the switch.
pub(super) const ALL: [&Text; 3] = [&EN, &ZH_CN, &ZH_TW];

#[cfg(test)]
mod tests {
    use super::*;
    use Language::{En, ZhCn, ZhTw};

    #[test]
    fn the_browser_s_preferences_choose_the_language_by_weight_then_order() {
        for (header, want) in [
            ("zh-CN,zh;q=0.9,en;q=0.8", ZhCn),
            ("zh-TW,zh;q=0.9", ZhTw),
            ("zh-Hant-HK", ZhTw),
            ("zh-HK;q=0.5, en;q=0.4", ZhTw),
            ("zh-Hans-SG", ZhCn),
            ("zh", ZhCn),
            ("en-GB,en;q=0.9", En),
            ("fr-FR, de;q=0.9", En),
            ("fr, zh-tw;q=0.3", ZhTw),
            ("en;q=0.5, zh-CN;q=0.8", ZhCn),
            ("zh-CN;q=0, en", En),
            ("zh-CN;q=2, en;q=0.1", En),
            ("zh-CN;q=0.1234, en;q=0.1", En),
            ("zh-TW;q=1.000, en", ZhTw),
            ("*", En),
            ("", En),
            (";;;,,,=", En),
        ] {
            assert_eq!(negotiate(header), want, "{header}");
        }
    }

    #[test]
    fn dates_are_written_as_each_language_writes_them() {
        let t = OffsetDateTime::from_unix_timestamp(1_796_507_113)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!((Text::of(En).date)(t), "5 December 2026");
        assert_eq!((Text::of(ZhCn).date)(t), "2026年12月5日");
        assert_eq!((Text::of(ZhTw).moment)(t), "2026年12月5日 21:45（UTC）");
        assert_eq!((Text::of(En).moment)(t), "5 December 2026, 21:45 UTC");
    }

    #[test]
    fn each_language_names_itself_and_the_choices_in_its_own_words() {
        for t in ALL {
            assert_eq!(Text::of(t.lang).name, t.name);
        }
        let zh = Text::of(ZhTw);
        assert_eq!(zh.how(Method::Web), "在本頁面");
        assert_eq!(zh.reader("auditor"), "稽核人員");
        assert_eq!(zh.reader("someone-new"), "本機構");
        assert!(
            zh.choice(&Choice::Assistance(AssistanceLevel::HumanOnly))
                .contains("僅由人工")
        );
        assert!(
            Text::of(ZhCn)
                .choice(&Choice::Objection("统计", true))
                .ends_with("统计")
        );
    }
}
