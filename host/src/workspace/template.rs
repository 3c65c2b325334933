//! Templates: what a workspace is made from. A template is a folder holding `template.toml`
//! (its manifest) and, optionally, a `files/` folder copied into every new workspace.
//!
//! ```toml
//! name = "Python project"
//! description = "A git repository with a Python package skeleton."
//! network = false                      # may its commands reach the network (policy decides too)
//! admins_only = false                  # only admins may make workspaces from it
//!
//! [startup]
//! script = "git init -q && python3 -m venv .venv"
//! timeout_seconds = 120
//!
//! [[parameters]]
//! name = "package"
//! description = "Name of the Python package."
//! type = "string"                      # string | number | bool
//! required = true
//! pattern = "^[a-z_][a-z0-9_]*$"       # strings: a regular expression the whole value matches
//!
//! [[parameters]]
//! name = "python"
//! type = "string"
//! default = "3.11"
//! options = ["3.11", "3.12"]
//!
//! [desktop]                            # the desktop computer-use chats drive (default 1280x800x24)
//! width = 1920
//! height = 1080
//! ```
//!
//! The startup script runs in the workspace's sandbox with each parameter in the environment
//! as `TOOLHOST_PARAM_<NAME>` (upper case).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::desktop::Geometry;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest a startup script may be allowed to run, whatever a manifest asks.
const MAX_STARTUP_SECONDS: u64 = 3600;
const DEFAULT_STARTUP_SECONDS: u64 = 300;

/// A template that ships inside the binary: (id, manifest, files as (path, content)).
type BundledTemplate = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// The templates that ship inside the binary.
const BUNDLED: &[BundledTemplate] = &[
    ("blank", include_str!("../../templates/blank/template.toml"), &[]),
    (
        "starter",
        include_str!("../../templates/starter/template.toml"),
        &[
            ("README.md", include_str!("../../templates/starter/files/README.md")),
            ("Makefile", include_str!("../../templates/starter/files/Makefile")),
        ],
    ),
];

/// The type of a template parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParameterType {
    String,
    Number,
    Bool,
}

/// One parameter a template takes.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type", default = "default_type")]
    pub kind: ParameterType,
    #[serde(default)]
    pub required: bool,
    pub default: Option<Value>,
    /// The only values allowed, when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<Value>,
    /// Strings: a regular expression the whole value must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Numbers: the smallest and largest allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

fn default_type() -> ParameterType {
    ParameterType::String
}

#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Startup {
    /// Shell script (bash) run in the workspace's folder when the workspace starts.
    #[serde(default)]
    pub script: String,
    #[serde(default = "default_startup_seconds")]
    pub timeout_seconds: u64,
}

impl Default for Startup {
    fn default() -> Startup {
        Startup { script: String::new(), timeout_seconds: DEFAULT_STARTUP_SECONDS }
    }
}

fn default_startup_seconds() -> u64 {
    DEFAULT_STARTUP_SECONDS
}

/// `template.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    network: bool,
    /// Addresses or ranges off the public internet its networked commands may reach.
    #[serde(default)]
    private_destinations: Vec<String>,
    /// Only admins may make workspaces from it.
    #[serde(default)]
    admins_only: bool,
    #[serde(default)]
    startup: Startup,
    #[serde(default)]
    parameters: Vec<Parameter>,
    /// The desktop beside its workspaces (started when a chat first needs one).
    #[serde(default)]
    desktop: Geometry,
}

/// Where a template's files come from.
#[derive(Clone, Debug)]
pub enum TemplateFiles {
    Bundled(&'static [(&'static str, &'static str)]),
    /// A `files/` folder (may not exist: no files).
    Folder(PathBuf),
}

/// A checked template.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub description: String,
    pub network: bool,
    /// Addresses or ranges (`10.1.2.3`, `192.168.7.0/24`) that are not on the public internet
    /// and that its commands with network may reach all the same, when the policy grants
    /// `network` with the destination as scope.
    pub private_destinations: Vec<String>,
    /// Only admins may make workspaces from it.
    pub admins_only: bool,
    /// `bundled`, or the folder it was read from.
    pub source: String,
    pub parameters: Vec<Parameter>,
    pub startup: Startup,
    /// The size of the desktop of its workspaces.
    pub desktop: Geometry,
    #[serde(skip)]
    #[schemars(skip)]
    pub files: TemplateFiles,
}

/// A template that could not be loaded, and why.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct TemplateProblem {
    pub id: String,
    pub source: String,
    pub problem: String,
}

/// Every loaded template, by id, and those refused.
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Templates {
    pub templates: Vec<Template>,
    pub problems: Vec<TemplateProblem>,
}

impl Templates {
    /// The bundled templates, then each folder of `dir` (a folder's template replaces a
    /// bundled one with the same id).
    pub fn load(dir: Option<&Path>) -> Templates {
        let mut by_id: BTreeMap<String, Template> = BTreeMap::new();
        let mut problems = Vec::new();
        for (id, manifest, files) in BUNDLED {
            match Template::parse(id, "bundled", manifest, TemplateFiles::Bundled(files)) {
                Ok(template) => {
                    by_id.insert(id.to_string(), template);
                }
                Err(problem) => {
                    problems.push(TemplateProblem { id: id.to_string(), source: "bundled".into(), problem })
                }
            }
        }
        if let Some(dir) = dir {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let mut folders: Vec<PathBuf> =
                        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
                    folders.sort();
                    for folder in folders {
                        let id = folder.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                        let source = folder.display().to_string();
                        match Template::read(&id, &folder) {
                            Ok(template) => {
                                if by_id.contains_key(&id) {
                                    tracing::info!(template = %id, %source, "a configured template replaces the bundled one");
                                }
                                by_id.insert(id, template);
                            }
                            Err(problem) => {
                                tracing::error!(template = %id, %source, %problem, "template refused");
                                problems.push(TemplateProblem { id, source, problem });
                            }
                        }
                    }
                }
                Err(e) => problems.push(TemplateProblem {
                    id: String::new(),
                    source: dir.display().to_string(),
                    problem: format!("the templates directory cannot be read: {e}"),
                }),
            }
        }
        Templates { templates: by_id.into_values().collect(), problems }
    }

    pub fn get(&self, id: &str) -> Option<&Template> {
        self.templates.iter().find(|t| t.id == id)
    }

    /// Templates whose id, name or description contains every word of `query`.
    pub fn search(&self, query: Option<&str>) -> Vec<&Template> {
        let words: Vec<String> = query.unwrap_or("").split_whitespace().map(str::to_lowercase).collect();
        self.templates
            .iter()
            .filter(|t| {
                let haystack = format!("{} {} {}", t.id, t.name, t.description).to_lowercase();
                words.iter().all(|w| haystack.contains(w))
            })
            .collect()
    }
}

impl Template {
    fn read(id: &str, folder: &Path) -> Result<Template, String> {
        let manifest_path = folder.join("template.toml");
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| format!("{} cannot be read: {e}", manifest_path.display()))?;
        Template::parse(id, &folder.display().to_string(), &text, TemplateFiles::Folder(folder.join("files")))
    }

    /// Parses and checks a manifest; the error names the field to fix.
    pub fn parse(id: &str, source: &str, manifest: &str, files: TemplateFiles) -> Result<Template, String> {
        check_id(id)?;
        let manifest: Manifest =
            toml::from_str(manifest).map_err(|e| format!("template.toml is invalid: {}", e.to_string().trim()))?;
        if manifest.name.trim().is_empty() {
            return Err("template.toml: `name` must not be empty".into());
        }
        if manifest.startup.timeout_seconds == 0 || manifest.startup.timeout_seconds > MAX_STARTUP_SECONDS {
            return Err(format!(
                "template.toml: `startup.timeout_seconds` must be between 1 and {MAX_STARTUP_SECONDS}"
            ));
        }
        let mut private_destinations = Vec::new();
        for destination in &manifest.private_destinations {
            private_destinations.push(normalize_destination(destination)?);
        }
        if !private_destinations.is_empty() && !manifest.network {
            return Err("template.toml: `private_destinations` needs `network = true`".into());
        }
        manifest.desktop.validate().map_err(|e| format!("template.toml: {e}"))?;
        let mut seen = std::collections::BTreeSet::new();
        for parameter in &manifest.parameters {
            parameter.check()?;
            if !seen.insert(parameter.name.clone()) {
                return Err(format!("template.toml: parameter `{}` is declared twice", parameter.name));
            }
        }
        Ok(Template {
            id: id.to_string(),
            name: manifest.name,
            description: manifest.description,
            network: manifest.network,
            private_destinations,
            admins_only: manifest.admins_only,
            source: source.to_string(),
            parameters: manifest.parameters,
            startup: manifest.startup,
            desktop: manifest.desktop,
            files,
        })
    }

    /// Checks `given` against the parameters and fills in defaults. The error lists every
    /// problem, each naming the parameter.
    pub fn resolve(&self, given: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let mut problems = Vec::new();
        for name in given.keys() {
            if !self.parameters.iter().any(|p| &p.name == name) {
                let known: Vec<&str> = self.parameters.iter().map(|p| p.name.as_str()).collect();
                problems.push(format!(
                    "`{name}` is not a parameter of template `{}` (it takes: {})",
                    self.id,
                    if known.is_empty() { "none".into() } else { known.join(", ") }
                ));
            }
        }
        let mut values = Map::new();
        for parameter in &self.parameters {
            match given.get(&parameter.name).or(parameter.default.as_ref()) {
                Some(value) => match parameter.validate(value) {
                    Ok(value) => {
                        values.insert(parameter.name.clone(), value);
                    }
                    Err(problem) => problems.push(problem),
                },
                None if parameter.required => {
                    problems.push(format!("`{}` is required: {}", parameter.name, parameter.description))
                }
                None => {}
            }
        }
        if problems.is_empty() { Ok(values) } else { Err(problems.join("; ")) }
    }

    /// Copies the template's files into `target` (an empty folder).
    pub fn copy_files(&self, target: &Path) -> std::io::Result<()> {
        match &self.files {
            TemplateFiles::Bundled(files) => {
                for (path, content) in *files {
                    let destination = target.join(path);
                    if let Some(parent) = destination.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(destination, content)?;
                }
                Ok(())
            }
            TemplateFiles::Folder(folder) if folder.is_dir() => copy_tree(folder, target),
            TemplateFiles::Folder(_) => Ok(()),
        }
    }
}

/// Copies regular files and folders; symbolic links in a template are skipped, so a template
/// cannot smuggle a link to the host's files into a workspace.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let destination = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir_all(&destination)?;
            copy_tree(&entry.path(), &destination)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), destination)?;
        }
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!("template id `{id}` (its folder's name) must be 1 to 64 characters of a-z, A-Z, 0-9, `-`, `_`"))
    }
}

impl Parameter {
    fn check(&self) -> Result<(), String> {
        let name = &self.name;
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(format!(
                "template.toml: parameter name `{name}` must be 1 to 64 characters of a-z, 0-9, `_`, starting with a letter"
            ));
        }
        if let Some(pattern) = &self.pattern {
            if self.kind != ParameterType::String {
                return Err(format!("template.toml: parameter `{name}`: `pattern` applies to strings only"));
            }
            Regex::new(pattern).map_err(|e| {
                format!("template.toml: parameter `{name}`: `pattern` is not a valid regular expression: {e}")
            })?;
        }
        if (self.min.is_some() || self.max.is_some()) && self.kind != ParameterType::Number {
            return Err(format!("template.toml: parameter `{name}`: `min` and `max` apply to numbers only"));
        }
        for option in &self.options {
            self.validate_type(option).map_err(|e| format!("template.toml: option {option} of {e}"))?;
        }
        if let Some(default) = &self.default {
            self.validate(default).map_err(|e| format!("template.toml: the default of {e}"))?;
        }
        Ok(())
    }

    fn validate_type(&self, value: &Value) -> Result<(), String> {
        let fits = match self.kind {
            ParameterType::String => value.is_string(),
            ParameterType::Number => value.is_number(),
            ParameterType::Bool => value.is_boolean(),
        };
        if fits {
            Ok(())
        } else {
            Err(format!("`{}` must be a {:?}, not {value}", self.name, self.kind).to_lowercase())
        }
    }

    /// The value, when it satisfies the parameter; otherwise what is wrong with it.
    fn validate(&self, value: &Value) -> Result<Value, String> {
        let name = &self.name;
        self.validate_type(value)?;
        if !self.options.is_empty() && !self.options.contains(value) {
            let options: Vec<String> = self.options.iter().map(Value::to_string).collect();
            return Err(format!("`{name}` must be one of {}, not {value}", options.join(", ")));
        }
        if let (Some(pattern), Some(text)) = (&self.pattern, value.as_str()) {
            let anchored = Regex::new(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())?;
            if !anchored.is_match(text) {
                return Err(format!("`{name}` must match the pattern `{pattern}`, and {value} does not"));
            }
        }
        if let Some(number) = value.as_f64()
            && (self.min.is_some_and(|min| number < min) || self.max.is_some_and(|max| number > max))
        {
            let range = format!(
                "{} to {}",
                self.min.map_or("any".into(), |m| m.to_string()),
                self.max.map_or("any".into(), |m| m.to_string())
            );
            return Err(format!("`{name}` must be in the range {range}, not {value}"));
        }
        Ok(value.clone())
    }
}

/// The environment a startup script gets its parameters in.
pub fn parameter_environment(values: &Map<String, Value>) -> Vec<(String, String)> {
    values
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (format!("TOOLHOST_PARAM_{}", name.to_uppercase()), text)
        })
        .collect()
}

/// A destination as routes name it (`10.1.2.3/32`, `192.168.7.0/24`), or what is wrong with it.
pub fn normalize_destination(destination: &str) -> Result<String, String> {
    let wrong = || {
        format!(
            "template.toml: `private_destinations` entry `{destination}` is not an address or a range like `10.1.2.3` or `192.168.7.0/24`"
        )
    };
    let (address, prefix) = match destination.trim().split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (destination.trim(), None),
    };
    // Commands reach the network over IPv4 only (slirp4netns), so destinations are IPv4.
    let address: std::net::Ipv4Addr = address.parse().map_err(|_| wrong())?;
    let prefix: u32 = match prefix {
        Some(prefix) => prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(wrong)?,
        None => 32,
    };
    if prefix < 8 {
        return Err(format!(
            "template.toml: `private_destinations` entry `{destination}` is too wide; name the addresses its commands need"
        ));
    }
    // The network the range names (`10.1.2.3/8` is `10.0.0.0/8`), as routes want it.
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    let network = std::net::Ipv4Addr::from(u32::from(address) & mask);
    Ok(format!("{network}/{prefix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(manifest: &str) -> Result<Template, String> {
        Template::parse("t", "test", manifest, TemplateFiles::Bundled(&[]))
    }

    #[test]
    fn the_bundled_templates_load() {
        let templates = Templates::load(None);
        assert!(templates.problems.is_empty(), "{:?}", templates.problems);
        assert!(templates.get("blank").is_some() && templates.get("starter").is_some());
    }

    #[test]
    fn a_manifest_with_a_mistake_is_refused_with_the_field_named() {
        assert!(template("description = 'no name'").unwrap_err().contains("name"));
        assert!(template("name = 'x'\nnetwrok = true").unwrap_err().contains("netwrok"));
        let bad_pattern = template("name = 'x'\n[[parameters]]\nname = 'p'\npattern = '('").unwrap_err();
        assert!(bad_pattern.contains("`p`") && bad_pattern.contains("regular expression"), "{bad_pattern}");
        let bad_default =
            template("name = 'x'\n[[parameters]]\nname = 'n'\ntype = 'number'\nmax = 3\ndefault = 9").unwrap_err();
        assert!(bad_default.contains("default") && bad_default.contains("range"), "{bad_default}");
        assert!(template("name = 'x'\n[startup]\ntimeout_seconds = 0").unwrap_err().contains("timeout_seconds"));
    }

    #[test]
    fn parameters_are_validated_and_defaults_filled_in() {
        let t = template(
            "name = 'x'\n[[parameters]]\nname = 'package'\nrequired = true\npattern = '[a-z]+'\n\
             [[parameters]]\nname = 'python'\ndefault = '3.11'\noptions = ['3.11', '3.12']\n\
             [[parameters]]\nname = 'workers'\ntype = 'number'\nmin = 1\nmax = 8",
        )
        .unwrap();
        let ok = t.resolve(json!({"package": "demo", "workers": 2}).as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(ok), json!({"package": "demo", "python": "3.11", "workers": 2}));
        let problems =
            t.resolve(json!({"python": "2.7", "workers": 99, "colour": "red"}).as_object().unwrap()).unwrap_err();
        for expected in [
            "`package` is required",
            "`python` must be one of",
            "`workers` must be in the range",
            "`colour` is not a parameter",
        ] {
            assert!(problems.contains(expected), "{expected} missing from {problems}");
        }
        let partial = t.resolve(json!({"package": "Demo1"}).as_object().unwrap()).unwrap_err();
        assert!(partial.contains("must match the pattern"), "the pattern matches the whole value: {partial}");
    }
}
