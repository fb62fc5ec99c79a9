# Reference numbers from R's pROC for tests/test_stats_proc.py.
#
# Usage: Rscript proc_reference.R ASAH_OUT.csv DATA1.csv [DATA2.csv ...] RESULT.csv
#   1. writes pROC's aSAH data set to ASAH_OUT.csv as y (outcome Poor = 1), a = s100b,
#      b = ndka, c = as.numeric(wfns), part = gender (A = Male, B = Female);
#   2. for aSAH and every DATA csv (columns y, a, b, c, part), computes with pROC:
#      per score: AUC, DeLong var, DeLong CI; per pair: paired DeLong Z, p (3 alternatives),
#      CI of the difference; per score: unpaired DeLong (part A vs part B) D, df, p.
# Direction fixed to "<" and levels to c(0, 1) so pROC never flips a curve.
suppressPackageStartupMessages(library(pROC))

args <- commandArgs(trailingOnly = TRUE)
asah_out <- args[1]
result_out <- args[length(args)]
data_files <- args[-c(1, length(args))]

data(aSAH)
asah <- data.frame(y = as.integer(aSAH$outcome == "Poor"), a = aSAH$s100b, b = aSAH$ndka,
                   c = as.numeric(aSAH$wfns),
                   part = ifelse(aSAH$gender == "Male", "A", "B"))
write.csv(asah, asah_out, row.names = FALSE)

fit <- function(y, x) roc(y, x, levels = c(0, 1), direction = "<", quiet = TRUE)
alternatives <- c("two.sided", "greater", "less")

# Results are written as flat records "dataset,test,subject,alternative,field,value" (17
# significant digits), so the test needs no R package beyond pROC.
records <- character(0)
emit <- function(dataset, test, subject, alternative, field, value) {
  records[length(records) + 1] <<- sprintf("%s,%s,%s,%s,%s,%.17g", dataset, test, subject,
                                           alternative, field, value)
}

analyse <- function(dataset, d) {
  scores <- c("a", "b", "c")
  rocs <- lapply(scores, function(s) fit(d$y, d[[s]]))
  names(rocs) <- scores
  for (s in scores) {
    ci <- ci.auc(rocs[[s]], conf.level = 0.95, method = "delong")
    emit(dataset, "single", s, "", "auc", as.numeric(auc(rocs[[s]])))
    emit(dataset, "single", s, "", "var", var(rocs[[s]], method = "delong"))
    emit(dataset, "single", s, "", "ci_lo", ci[1])
    emit(dataset, "single", s, "", "ci_hi", ci[3])
  }
  for (p in list(c("a", "b"), c("a", "c"), c("b", "c"))) {
    for (alt in alternatives) {
      t <- roc.test(rocs[[p[1]]], rocs[[p[2]]], method = "delong", paired = TRUE,
                    alternative = alt, conf.level = 0.95)
      subject <- paste0(p[1], p[2])
      emit(dataset, "paired", subject, alt, "z", unname(t$statistic))
      emit(dataset, "paired", subject, alt, "p", t$p.value)
      emit(dataset, "paired", subject, alt, "ci_lo", t$conf.int[1])
      emit(dataset, "paired", subject, alt, "ci_hi", t$conf.int[2])
    }
  }
  in_a <- d$part == "A"
  for (s in scores) {
    ra <- fit(d$y[in_a], d[[s]][in_a])
    rb <- fit(d$y[!in_a], d[[s]][!in_a])
    for (alt in alternatives) {
      t <- roc.test(ra, rb, method = "delong", paired = FALSE, alternative = alt)
      emit(dataset, "unpaired", s, alt, "d", unname(t$statistic))
      emit(dataset, "unpaired", s, alt, "df", unname(t$parameter))
      emit(dataset, "unpaired", s, alt, "p", t$p.value)
    }
  }
}

analyse("aSAH", asah)
for (f in data_files) analyse(basename(f), read.csv(f))
writeLines(c("dataset,test,subject,alternative,field,value", records), result_out)
