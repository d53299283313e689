//! Label and field selectors as the API server reads them: labels `k=v`, `k==v`, `k!=v`, `k`,
//! `!k`, `k in (a,b)`, `k notin (a,b)`; fields `path=v`, `path==v`, `path!=v` on dotted paths
//! (`metadata.name`, `involvedObject.name`, `spec.nodeName`, `status.phase`). A selector the server
//! would refuse is a 400.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    labels: Vec<LabelReq>,
    /// (dotted path, value, equal?)
    fields: Vec<(String, String, bool)>,
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn set(values: &str) -> Result<Vec<String>, String> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("expected a (set) in {values:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

impl Selectors {
    pub fn parse(label: Option<&str>, field: Option<&str>) -> Result<Self, String> {
        let mut s = Self::default();
        for req in split_top(label.unwrap_or("")) {
            let r = if let Some((k, v)) = req.split_once("!=") {
                LabelReq::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = req.split_once("==") {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = req.split_once('=') {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = req.split_once(" notin ") {
                LabelReq::NotIn(k.trim().into(), set(v)?)
            } else if let Some((k, v)) = req.split_once(" in ") {
                LabelReq::In(k.trim().into(), set(v)?)
            } else if let Some(k) = req.strip_prefix('!') {
                LabelReq::NotExists(k.trim().into())
            } else if req
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                LabelReq::Exists(req.clone())
            } else {
                return Err(format!("unable to parse requirement: {req:?}"));
            };
            s.labels.push(r);
        }
        for req in split_top(field.unwrap_or("")) {
            let (path, value, eq) = if let Some((k, v)) = req.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = req.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = req.split_once('=') {
                (k, v, true)
            } else {
                return Err(format!("invalid field selector: {req:?}"));
            };
            s.fields.push((path.trim().into(), value.trim().into(), eq));
        }
        Ok(s)
    }

    /// The name a `metadata.name=` field selector asks for (RBAC authorizes list and watch of
    /// such a request against `resourceNames`).
    pub fn name(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|(p, _, eq)| p == "metadata.name" && *eq)
            .map(|(_, v, _)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
        });
        let fields_ok = self.fields.iter().all(|(path, want, eq)| {
            let mut cur = obj;
            for part in path.split('.') {
                cur = &cur[part];
            }
            let got = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (got == *want) == *eq
        });
        labels_ok && fields_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_and_field_selectors() {
        let pod = json!({"metadata": {"name": "a", "labels": {"app": "x", "tier": "gpu"}}, "status": {"phase": "Pending"}});
        let s = |l: Option<&str>, f: Option<&str>| Selectors::parse(l, f).unwrap().matches(&pod);
        assert!(s(Some("app=x"), None));
        assert!(s(Some("app==x,tier in (gpu, cpu)"), None));
        assert!(!s(Some("app!=x"), None));
        assert!(s(Some("!missing,app"), None));
        assert!(!s(Some("tier notin (gpu)"), None));
        assert!(s(None, Some("metadata.name=a,status.phase!=Running")));
        assert!(!s(None, Some("metadata.name=b")));
        assert!(Selectors::parse(Some("a b c"), None).is_err());
        assert_eq!(
            Selectors::parse(None, Some("metadata.name=x"))
                .unwrap()
                .name(),
            Some("x")
        );
    }
}
